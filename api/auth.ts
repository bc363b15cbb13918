import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler, Response } from 'express';
import type { ApiToken, Role } from '../shared/config.js';
import { ForbiddenError, UnauthorizedError } from '../shared/errors.js';
import { looksLikeStreamToken, type StreamTokens } from './stream-tokens.js';

/** Who is asking: a role (or none) and a label that is safe to log and to store with a job. */
export interface Principal {
  readonly role: Role | null;
  /** `token:<label>`, `admin-pin`, `anonymous`, `open`, or `stream-token`. */
  readonly label: string;
  /** Set for a stream token: the one job whose log it may read. */
  readonly jobId?: string;
}

const RANK: Record<Role, number> = { read: 1, write: 2, admin: 3 };

export interface AuthOptions {
  readonly tokens: readonly ApiToken[];
  readonly adminPin?: string | undefined;
  /** Role of requests without credentials. */
  readonly anonymousRole?: 'read' | 'write' | undefined;
  /** No API_TOKENS configured: every request acts as admin (loopback, or AUTH_DISABLED). */
  readonly open: boolean;
  readonly streamTokens: StreamTokens;
}

export interface Auth {
  /** Reads the credentials (never failing on their absence) and records the principal. */
  readonly identify: RequestHandler;
  /** Requires at least `role`: 401 without usable credentials, 403 with too small a role. */
  require(role: Role): RequestHandler;
  /**
   * Like require('read'), but also accepts `?token=<stream token>` issued for the route's `:id`:
   * for the SSE and JSON log endpoints, which a browser's EventSource opens without headers.
   */
  readonly requireJobReader: RequestHandler;
}

const PRINCIPAL = 'ferryPrincipal';

export function principalOf(res: Response): Principal {
  return (res.locals[PRINCIPAL] as Principal | undefined) ?? { role: null, label: 'anonymous' };
}

/** A label for per-caller state (rate limits, Idempotency-Key scopes): the token label, else the address. */
export function callerScope(req: Request, res: Response): string {
  const principal = principalOf(res);
  return principal.label.startsWith('token:') || principal.label === 'admin-pin'
    ? principal.label
    : `ip:${req.ip ?? req.socket.remoteAddress ?? 'unknown'}`;
}

const digest = (value: string) => createHash('sha256').update(value).digest();

/** Compares in constant time whatever the lengths (both sides hashed to 32 bytes first). */
function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

export function createAuth(options: AuthOptions): Auth {
  const anonymous: Principal = options.open
    ? { role: 'admin', label: 'open' }
    : { role: options.anonymousRole ?? null, label: 'anonymous' };

  /** The token's entry, checking every entry so the time taken does not tell which one matched. */
  const findToken = (token: string): ApiToken | undefined => {
    let found: ApiToken | undefined;
    for (const entry of options.tokens) {
      if (safeEqual(entry.token, token) && !found) found = entry;
    }
    return found;
  };

  const identify: RequestHandler = (req, res, next) => {
    const header = req.get('authorization');
    const pin = req.get('x-admin-pin');
    let principal: Principal = anonymous;
    if (header !== undefined) {
      const [scheme = '', value = ''] = header.trim().split(/\s+/, 2);
      let token: string | undefined;
      if (scheme.toLowerCase() === 'bearer') token = value;
      else if (scheme.toLowerCase() === 'basic') {
        // The dashboard's browser login: any user name, the API token as password.
        const decoded = Buffer.from(value, 'base64').toString('utf8');
        token = decoded.includes(':') ? decoded.slice(decoded.indexOf(':') + 1) : undefined;
      }
      const entry = token ? findToken(token) : undefined;
      if (!entry) {
        if (options.open) {
          res.locals[PRINCIPAL] = anonymous;
          next();
          return;
        }
        next(new UnauthorizedError('The credentials are not valid', scheme.toLowerCase() === 'basic'));
        return;
      }
      principal = { role: entry.role, label: `token:${entry.label}` };
    } else if (pin !== undefined && options.adminPin !== undefined) {
      if (!safeEqual(options.adminPin, pin)) {
        next(new UnauthorizedError('The admin PIN is not valid'));
        return;
      }
      principal = { role: 'admin', label: 'admin-pin' };
    }
    res.locals[PRINCIPAL] = principal;
    next();
  };

  const check = (res: Response, role: Role, basic = false): void => {
    const principal = principalOf(res);
    if (principal.role === null) throw new UnauthorizedError('Authentication required: send Authorization: Bearer <token>', basic);
    if (RANK[principal.role] < RANK[role]) throw new ForbiddenError(`This needs the ${role} role; the credentials have ${principal.role}`);
  };

  return {
    identify,
    require(role) {
      return (_req, res, next) => {
        check(res, role, role === 'admin');
        next();
      };
    },
    requireJobReader(req, res, next) {
      const query = req.query.token;
      if (query === undefined) {
        check(res, 'read');
        next();
        return;
      }
      // Only stream tokens travel in URLs (they end up in access logs and browser history).
      if (typeof query !== 'string' || !looksLikeStreamToken(query)) {
        throw new UnauthorizedError('Only a stream token may be sent in the URL; send API tokens as Authorization: Bearer');
      }
      const jobId = String(req.params.id);
      if (!options.streamTokens.verify(jobId, query)) throw new UnauthorizedError('The stream token is not valid for this job');
      res.locals[PRINCIPAL] = { role: 'read', label: 'stream-token', jobId } satisfies Principal;
      next();
    },
  };
}

/** Refuses a bad auth setup at start: the message says what to set. Returns warnings to log. */
export function checkAuthSetup(options: {
  readonly host: string;
  readonly tokens: readonly ApiToken[];
  readonly tokenSecret: string | undefined;
  readonly disabled: boolean;
}): { error?: string; warnings: string[] } {
  const loopback = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(options.host);
  if (options.tokens.length > 0) {
    if (!options.tokenSecret) {
      return { error: 'TOKEN_SECRET: required when API_TOKENS is set (at least 32 characters, the same on every API instance)', warnings: [] };
    }
    return { warnings: options.disabled ? ['AUTH_DISABLED=true is ignored: API_TOKENS is set'] : [] };
  }
  if (options.disabled) return { warnings: ['AUTH_DISABLED=true: the API is open to anyone who can reach it (every request acts as admin)'] };
  if (!loopback) {
    return {
      error:
        `API_TOKENS: required when HOST (${options.host}) is not a loopback address. Set API_TOKENS=role:token,... ` +
        '(roles read, write, admin) and TOKEN_SECRET, or AUTH_DISABLED=true to run open knowingly',
      warnings: [],
    };
  }
  return { warnings: [`API_TOKENS is not set: the API is open (every request acts as admin); it listens on ${options.host} only`] };
}
