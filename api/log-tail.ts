import type { Redis } from 'ioredis';
import { logGroupOfKey, logWakeKey } from '../shared/keys.js';
import type { Logger } from '../shared/logger.js';
import { isCluster } from '../shared/redis.js';

/** A batch of new entries of one stream, shared by every subscriber of that stream. */
export interface TailBatch {
  readonly key: string;
  readonly entries: ReadonlyArray<readonly [id: string, fields: string[]]>;
  /** Per-batch memo, so work such as formatting an SSE event is done once for all subscribers. */
  readonly memo: Map<string | symbol, unknown>;
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
  /**
   * A dedicated connection: a blocked XREAD can do nothing else. In Redis Cluster mode the tail
   * duplicates it once per log group in use (at most LOG_GROUPS), since one XREAD reads one slot.
   */
  readonly blocking: Redis;
  /** A command connection used to interrupt the blocked read when the set of streams changes. */
  readonly control: Redis;
  readonly logger: Logger;
  /** Milliseconds one XREAD blocks; it is interrupted sooner when streams are added. */
  readonly blockMs?: number;
}

interface Stream {
  position: string;
  listeners: Set<TailListener>;
}

interface Lane {
  readonly streams: Map<string, Stream>;
  /** Asks the blocked read to start again with the current set of streams. */
  interrupt(): void;
  close(): Promise<void>;
}

type WakeMode =
  /** One server: CLIENT UNBLOCK of the blocked connection, through the control connection. */
  | { readonly kind: 'unblock' }
  /**
   * Redis Cluster: the lane also reads its group's wake stream; an XADD to it (routed by slot to the
   * node the lane blocks on) ends the read. CLIENT UNBLOCK cannot be aimed at a node there.
   */
  | { readonly kind: 'stream'; readonly key: string };

/**
 * One blocking XREAD over a set of streams that share a slot (or a whole server), fanned out in
 * memory to every listener.
 */
function createLane(blocking: Redis, control: Redis, logger: Logger, blockMs: number, wakeMode: WakeMode): Lane {
  const streams = new Map<string, Stream>();
  let closed = false;
  let blockedClientId: number | undefined;
  let reading = false;
  /** The set of streams changed since the current XREAD was issued. */
  let dirty = false;
  let wake: (() => void) | undefined;
  let loop: Promise<void> | undefined;
  /** Position in the wake stream: entries after it end the read at once, so no wake is lost. */
  let wakePosition = '0-0';

  const refreshClientId = async () => {
    try {
      blockedClientId = Number(await blocking.client('ID'));
    } catch {
      blockedClientId = undefined;
    }
  };
  if (wakeMode.kind === 'unblock') blocking.on('ready', () => void refreshClientId());

  /**
   * Ends a blocked XREAD early so the next one includes new streams. With UNBLOCK the XREAD may not
   * have reached Redis yet when this runs (UNBLOCK then answers 0), so it tries again for a while.
   */
  const interrupt = () => {
    dirty = true;
    if (wake) {
      wake();
      return;
    }
    if (wakeMode.kind === 'stream') {
      void control.xadd(wakeMode.key, 'MAXLEN', '1', '*', 'w', '1').catch(() => undefined);
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
    if (wakeMode.kind === 'stream') {
      keys.push(wakeMode.key);
      positions.push(wakePosition);
    }
    reading = true;
    dirty = false;
    let result: Array<[string, Array<[string, string[]]>]> | null;
    try {
      result = (await blocking.xread('COUNT', 1000, 'BLOCK', blockMs, 'STREAMS', ...keys, ...positions)) as typeof result;
    } finally {
      reading = false;
    }
    for (const [key, entries] of result ?? []) {
      const last = entries[entries.length - 1];
      if (!last) continue;
      if (wakeMode.kind === 'stream' && key === wakeMode.key) {
        wakePosition = last[0];
        continue;
      }
      const stream = streams.get(key);
      if (!stream) continue;
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
    if (wakeMode.kind === 'unblock' && blockedClientId === undefined) await refreshClientId();
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
    streams,
    interrupt() {
      loop ??= run();
      interrupt();
    },
    async close() {
      closed = true;
      streams.clear();
      // Disconnecting ends a blocked read; the loop then sees `closed`.
      wake?.();
      blocking.disconnect();
      await loop?.catch(() => undefined);
    },
  };
}

/**
 * One blocking XREAD per API process over every stream its clients follow, fanned out in memory:
 * Redis connections stay constant whatever the number of viewers (one per viewer would not). In
 * Redis Cluster mode, where one XREAD can only read one slot, one such read per log group in use
 * (shared/keys.ts LOG_GROUPS): still bounded, whatever the number of viewers or jobs.
 */
export function createLogTail({ blocking, control, logger, blockMs = 5_000 }: LogTailOptions): LogTail {
  const cluster = isCluster(control);
  const lanes = new Map<number, Lane>();

  const laneFor = (key: string): Lane => {
    const group = cluster ? (logGroupOfKey(key) ?? -1) : 0;
    let lane = lanes.get(group);
    if (!lane) {
      if (cluster && group < 0) throw new Error(`log tail: ${key} has no log group hash tag`);
      // The first lane uses the given connection; in Cluster mode later ones a duplicate of it.
      const connection = lanes.size === 0 ? blocking : blocking.duplicate();
      if (connection !== blocking) connection.on('error', (error: Error) => logger.debug('log tail connection error', { error: error.message }));
      lane = createLane(connection, control, logger, blockMs, cluster ? { kind: 'stream', key: logWakeKey(group) } : { kind: 'unblock' });
      lanes.set(group, lane);
    }
    return lane;
  };

  return {
    subscribe(key, fromId, listener) {
      const lane = laneFor(key);
      let stream = lane.streams.get(key);
      if (!stream) {
        stream = { position: fromId, listeners: new Set() };
        lane.streams.set(key, stream);
        lane.interrupt();
      }
      stream.listeners.add(listener);
      const owner = stream;
      return () => {
        owner.listeners.delete(listener);
        if (owner.listeners.size === 0 && lane.streams.get(key) === owner) lane.streams.delete(key);
      };
    },
    stats() {
      let streams = 0;
      let listeners = 0;
      for (const lane of lanes.values()) {
        streams += lane.streams.size;
        for (const stream of lane.streams.values()) listeners += stream.listeners.size;
      }
      return { streams, listeners };
    },
    async close() {
      await Promise.all([...lanes.values()].map((lane) => lane.close()));
      // A tail that never followed anything still owns its connection.
      if (lanes.size === 0) blocking.disconnect();
    },
  };
}
