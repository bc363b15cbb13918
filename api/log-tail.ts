import type { Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';

/** A batch of new entries of one stream, shared by every subscriber of that stream. */
export interface TailBatch {
  readonly key: string;
  readonly entries: ReadonlyArray<readonly [id: string, fields: string[]]>;
  /** Per-batch memo, so work such as formatting an SSE event is done once for all subscribers. */
  readonly memo: Map<string, unknown>;
}

export type TailListener = (batch: TailBatch) => void;

export interface LogTail {
  /**
   * Follows `key` from `fromId` (exclusive) for this listener. A stream already followed keeps its
   * position, so a listener may receive entries at or before `fromId`, or miss some before the
   * stream's position: subscribers replay with XRANGE after subscribing and drop what they sent.
   * Returns the unsubscribe function.
   */
  subscribe(key: string, fromId: string, listener: TailListener): () => void;
  /** Streams followed and listeners attached, for tests and metrics. */
  stats(): { streams: number; listeners: number };
  close(): Promise<void>;
}

export interface LogTailOptions {
  /** A dedicated connection: a blocked XREAD can do nothing else. */
  readonly blocking: Redis;
  /** A command connection used to interrupt the blocked read when the set of streams changes. */
  readonly control: Redis;
  readonly logger: Logger;
  /** Milliseconds one XREAD blocks; it is interrupted sooner when streams are added. */
  readonly blockMs?: number;
}

/**
 * One blocking XREAD per API process over every stream its clients follow, fanned out in memory:
 * Redis connections stay constant whatever the number of viewers (one per viewer would not).
 */
export function createLogTail({ blocking, control, logger, blockMs = 5_000 }: LogTailOptions): LogTail {
  const streams = new Map<string, { position: string; listeners: Set<TailListener> }>();
  let closed = false;
  let blockedClientId: number | undefined;
  let reading = false;
  /** The set of streams changed since the current XREAD was issued. */
  let dirty = false;
  let wake: (() => void) | undefined;
  let loop: Promise<void> | undefined;

  const refreshClientId = async () => {
    try {
      blockedClientId = Number(await blocking.client('ID'));
    } catch {
      blockedClientId = undefined;
    }
  };
  blocking.on('ready', () => void refreshClientId());

  /**
   * Ends a blocked XREAD early so the next one includes new streams. The XREAD may not have reached
   * Redis yet when this runs (UNBLOCK then answers 0), so it tries again for a short while.
   */
  const interrupt = () => {
    dirty = true;
    if (wake) {
      wake();
      return;
    }
    void (async () => {
      for (let attempt = 0; attempt < 40 && reading && dirty && blockedClientId !== undefined; attempt += 1) {
        const unblocked = await control.client('UNBLOCK', blockedClientId).catch(() => 0);
        if (unblocked === 1) return;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
  };

  const readOnce = async () => {
    const keys = [...streams.keys()];
    const positions = keys.map((key) => streams.get(key)?.position ?? '$');
    reading = true;
    dirty = false;
    let result: Array<[string, Array<[string, string[]]>]> | null;
    try {
      result = (await blocking.xread('COUNT', 1000, 'BLOCK', blockMs, 'STREAMS', ...keys, ...positions)) as typeof result;
    } finally {
      reading = false;
    }
    for (const [key, entries] of result ?? []) {
      const stream = streams.get(key);
      const last = entries[entries.length - 1];
      if (!stream || !last) continue;
      stream.position = last[0];
      const batch: TailBatch = { key, entries, memo: new Map() };
      for (const listener of stream.listeners) {
        try {
          listener(batch);
        } catch (error) {
          logger.error('log tail listener failed', { error });
        }
      }
    }
  };

  const run = async () => {
    if (blockedClientId === undefined) await refreshClientId();
    while (!closed) {
      if (streams.size === 0) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
        continue;
      }
      try {
        await readOnce();
      } catch (error) {
        if (closed) break;
        logger.warn('log tail read failed; retrying', { error: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  };

  return {
    subscribe(key, fromId, listener) {
      let stream = streams.get(key);
      if (!stream) {
        stream = { position: fromId, listeners: new Set() };
        streams.set(key, stream);
        loop ??= run();
        interrupt();
      }
      stream.listeners.add(listener);
      const owner = stream;
      return () => {
        owner.listeners.delete(listener);
        if (owner.listeners.size === 0 && streams.get(key) === owner) streams.delete(key);
      };
    },
    stats() {
      let listeners = 0;
      for (const stream of streams.values()) listeners += stream.listeners.size;
      return { streams: streams.size, listeners };
    },
    async close() {
      closed = true;
      streams.clear();
      interrupt();
      wake?.();
      blocking.disconnect();
      await loop?.catch(() => undefined);
    },
  };
}
