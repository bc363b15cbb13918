import { createHash, randomUUID } from 'node:crypto';
import type { Request, RequestHandler } from 'express';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { AppError } from '../shared/errors.js';
import type { Keys } from '../shared/keys.js';
import { compareAndSet } from './redis-cas.js';
import { parseIdempotencyKey } from './request-schemas.js';

export const IDEMPOTENCY_HEADER = 'Idempotency-Key';
export const REPLAYED_HEADER = 'Idempotent-Replayed';

/** An earlier request with the same Idempotency-Key has not been answered yet (HTTP 409). */
export class IdempotencyInProgressError extends AppError {
  constructor() {
    super('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry shortly');
  }
}

/**
 * Whose key space an Idempotency-Key lives in: two callers may pick the same key. There is no
 * authentication yet, so the default is the client address; an auth layer passes a function that
 * returns a stable label of the caller's identity (e.g. `token:<name>`) instead.
 */
export type IdempotencyScope = (req: Request) => string;

/** `req.ip`: the socket's peer address, since the app does not trust proxy headers. */
export const clientAddressScope: IdempotencyScope = (req) => `ip:${req.ip ?? req.socket.remoteAddress ?? 'unknown'}`;

export interface StoredAnswer {
  readonly status: number;
  readonly body: unknown;
}

export type IdempotencyClaim =
  | { readonly kind: 'replay'; readonly answer: StoredAnswer }
  | { readonly kind: 'in_progress' }
  | {
      readonly kind: 'claimed';
      /** Stores the answer for replays, in place of this request's in-progress marker. */
      complete(answer: StoredAnswer): Promise<boolean>;
      /** Drops the marker so a retry runs the request again. */
      abandon(): Promise<boolean>;
    };

export interface IdempotencyStore {
  /** Claims `key` in `scope`, or tells that it is taken by a request in flight or answered. */
  claim(scope: string, key: string): Promise<IdempotencyClaim>;
}

export interface IdempotencyStoreOptions {
  readonly redis: Redis;
  readonly keys: Keys;
  /** How long an answer is replayed (default 24 h). */
  readonly answerTtlMs?: number;
  /**
   * How long an in-progress marker outlives a request that never answered (a crashed process):
   * until then, retries get 409. A submit takes milliseconds; this only bounds the crash case.
   */
  readonly inProgressTtlMs?: number;
}

const StoredValueSchema = z.discriminatedUnion('state', [
  z.object({ state: z.literal('in_progress'), token: z.string() }),
  z.object({ state: z.literal('answered'), status: z.number().int(), body: z.unknown() }),
]);

function parseStored(raw: string): z.infer<typeof StoredValueSchema> | null {
  try {
    const parsed = StoredValueSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export function createIdempotencyStore({
  redis,
  keys,
  answerTtlMs = 24 * 60 * 60 * 1_000,
  inProgressTtlMs = 60_000,
}: IdempotencyStoreOptions): IdempotencyStore {
  return {
    async claim(scope, key) {
      // Hashed: the stored key has a fixed length and no caller-chosen characters.
      const redisKey = keys.idempotency(createHash('sha256').update(JSON.stringify([scope, key])).digest('hex'));
      const marker = JSON.stringify({ state: 'in_progress', token: randomUUID() });
      for (let attempt = 0; attempt < 5; attempt += 1) {
        if ((await redis.set(redisKey, marker, 'PX', inProgressTtlMs, 'NX')) === 'OK') {
          return {
            kind: 'claimed',
            complete: (answer) =>
              compareAndSet(redis, redisKey, marker, JSON.stringify({ state: 'answered', status: answer.status, body: answer.body }), answerTtlMs),
            abandon: () => compareAndSet(redis, redisKey, marker, null),
          };
        }
        const raw = await redis.get(redisKey);
        if (raw === null) continue; // expired or abandoned in between: claim again
        const stored = parseStored(raw);
        if (stored?.state === 'answered') return { kind: 'replay', answer: { status: stored.status, body: stored.body } };
        if (stored?.state === 'in_progress') return { kind: 'in_progress' };
        // Unreadable (written by another version?): replace it rather than block the key for a day.
        await compareAndSet(redis, redisKey, raw, null);
      }
      return { kind: 'in_progress' };
    },
  };
}

/**
 * Which answers are kept for replay. 2xx: the request took effect, and a retry must not repeat it.
 * 400: a validation answer is a pure function of the request, so it is final for that key too (the
 * client must use a new key for a corrected request, as it would after any answer). Not 409 or
 * 5xx: they describe a passing state (a concurrent request, Redis unreachable), so a retry with the
 * same key must be able to run the request and succeed.
 */
export function isReplayable(status: number): boolean {
  return (status >= 200 && status < 300) || status === 400;
}

export interface IdempotencyMiddlewareOptions {
  readonly store: IdempotencyStore;
  readonly scope?: IdempotencyScope;
}

/**
 * `Idempotency-Key` for a non-idempotent route: the first answer to a key (status and JSON body,
 * from the route or from the error handler) is stored before it is sent; a later request with the
 * key gets that answer again with `Idempotent-Replayed: true`, whatever its own body. A request
 * that finds the key claimed by one still running gets 409 IDEMPOTENCY_IN_PROGRESS. Requests
 * without the header pass through untouched.
 */
export function createIdempotencyMiddleware({ store, scope = clientAddressScope }: IdempotencyMiddlewareOptions): RequestHandler {
  return async (req, res, next) => {
    const key = parseIdempotencyKey(req.get(IDEMPOTENCY_HEADER));
    if (key === undefined) {
      next();
      return;
    }
    // A key is the caller's for one route: the same key sent to another submit route (whose answer
    // has another shape) is another key. The path as the client spelled it, in lower case, without
    // a trailing slash or query.
    const route = `${req.method} ${(req.originalUrl || req.url || '').split('?')[0]?.toLowerCase().replace(/\/+$/, '') ?? ''}`;
    const claim = await store.claim(`${scope(req)} ${route}`, key);
    if (claim.kind === 'replay') {
      res.status(claim.answer.status).set(REPLAYED_HEADER, 'true').json(claim.answer.body);
      return;
    }
    if (claim.kind === 'in_progress') {
      res.set('retry-after', '1');
      throw new IdempotencyInProgressError();
    }
    // Every answer of this route is JSON (errors too, via the error handler): hold the first one
    // until it is stored, so a client that saw it always gets it again on a retry.
    const send = res.json.bind(res);
    let answered = false;
    res.json = ((body: unknown) => {
      if (answered) return send(body);
      answered = true;
      const status = res.statusCode;
      const settle = isReplayable(status) ? claim.complete({ status, body }) : claim.abandon();
      // When Redis fails here the answer is still sent: the work is done and the client should know.
      // The marker then expires after inProgressTtlMs and a retry runs again (and is deduplicated).
      void settle
        .catch(() => false)
        .then(() => send(body))
        .catch(next);
      return res;
    }) as typeof res.json;
    next();
  };
}
