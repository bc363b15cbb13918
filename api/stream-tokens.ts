import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Read-only tokens for one job's log, for browsers' `EventSource` (which cannot send headers).
 * A token is an HMAC of the job id under TOKEN_SECRET: any API instance with the same secret
 * verifies it without a Redis lookup, and it needs no expiry of its own: it opens nothing once the
 * job's record is gone. It never grants more than reading that one job's log.
 */
export interface StreamTokens {
  issue(jobId: string): string;
  /** True when `token` was issued for exactly this job id. */
  verify(jobId: string, token: string): boolean;
}

const PREFIX = 'st1.';

export function looksLikeStreamToken(token: string): boolean {
  return token.startsWith(PREFIX);
}

/** `secret` is TOKEN_SECRET; without one (an open API) a random per-process secret is used. */
export function createStreamTokens(secret: string | undefined): StreamTokens {
  const key = secret ?? randomBytes(32).toString('hex');
  const sign = (jobId: string) => createHmac('sha256', key).update(`ferry-stream:${jobId}`).digest();
  return {
    issue: (jobId) => `${PREFIX}${sign(jobId).toString('base64url')}`,
    verify(jobId, token) {
      if (!token.startsWith(PREFIX)) return false;
      const given = Buffer.from(token.slice(PREFIX.length), 'base64url');
      const expected = sign(jobId);
      return given.length === expected.length && timingSafeEqual(given, expected);
    },
  };
}
