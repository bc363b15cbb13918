import winston from 'winston';

export type Logger = winston.Logger;

export interface LoggerOptions {
  readonly service: string;
  readonly level: string;
  /** JSON lines (production, or output not a terminal) or readable lines (a terminal). */
  readonly json?: boolean;
}

const SECRET_KEY = /pass(word)?|secret|token|authorization|api[_-]?key|cookie/i;
// Up to the authority's last '@': a password may hold a raw '@' (WHATWG URL and ioredis accept it).
const URL_CREDENTIALS = /(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s]*@/gi;
// The whole credential, whatever its characters (API tokens are not limited to base64's).
const BEARER_OR_BASIC = /\b(Bearer|Basic)\s+[^\s"',;]+/g;

/** Removes credentials from a string: `user:pass@` in URLs and Authorization header values. */
export function redactText(text: string): string {
  return text.replace(URL_CREDENTIALS, '$1[redacted]@').replace(BEARER_OR_BASIC, '$1 [redacted]');
}

function redactValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return redactText(value);
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    // JSON.stringify drops an Error's own fields: keep what an operator needs, redacted.
    const code = (value as NodeJS.ErrnoException).code;
    return {
      name: value.name,
      message: redactText(value.message),
      ...(code ? { code } : {}),
      ...(value.stack ? { stack: redactText(value.stack) } : {}),
    };
  }
  if (Array.isArray(value)) return value.map((item) => redactValue(item, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    out[key] = SECRET_KEY.test(key) ? '[redacted]' : redactValue(item, depth + 1);
  }
  return out;
}

/** Redacts secrets in every field before any transport sees the entry. */
const redact = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === 'level') continue;
    info[key] = SECRET_KEY.test(key) ? '[redacted]' : redactValue(info[key], 0);
  }
  if (typeof info.message === 'string') info.message = redactText(info.message);
  return info;
});

/** The root logger of one process. Child loggers add `request_id` or `job_id`. */
export function createLogger({ service, level, json }: LoggerOptions): Logger {
  const useJson = json ?? (process.env.NODE_ENV === 'production' || !process.stdout.isTTY);
  // winston runs the logger's formats on every entry and only then lets the transport drop it by
  // level: a per-request `http` line below LOG_LEVEL still cost its redaction and JSON. Drop such
  // entries first (the logger's level is read per entry, so changing it at run time still works).
  const levels = winston.config.npm.levels;
  const created: { logger?: Logger } = {};
  const enabled = winston.format((info) => {
    const wanted = levels[info.level];
    const threshold = levels[created.logger?.level ?? level];
    return wanted === undefined || threshold === undefined || wanted <= threshold ? info : false;
  });
  const format = useJson
    ? winston.format.combine(enabled(), winston.format.errors({ stack: true }), redact(), winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        enabled(),
        winston.format.errors({ stack: true }),
        redact(),
        winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
        winston.format.colorize(),
        winston.format.printf(({ timestamp, level: lvl, message, service: svc, stack, ...rest }) => {
          const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
          return `${String(timestamp)} ${lvl} [${String(svc)}] ${String(message)}${extra}${stack ? `\n${String(stack)}` : ''}`;
        }),
      );
  const logger = winston.createLogger({
    level,
    defaultMeta: { service },
    format,
    transports: [new winston.transports.Console({ stderrLevels: ['error'] })],
  });
  created.logger = logger;
  return logger;
}
