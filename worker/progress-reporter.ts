import type { Progress } from '../shared/job-contract.js';
import { EMPTY_PROGRESS } from '../shared/job-contract.js';

export interface ProgressReporter {
  readonly current: Progress;
  /** Applies a change; publishes at most once per interval (bytes arrive per chunk). */
  update(change: Partial<{ [K in keyof Progress]: number }>, mode?: 'add' | 'set'): void;
  /** Publishes the current snapshot now and waits for it. */
  flush(): Promise<void>;
}

/**
 * Throttles progress snapshots: a transfer reports every chunk, but readers need a few updates a
 * second, and each publish is a Redis write.
 */
export function createProgressReporter(
  publish: (progress: Progress) => Promise<void>,
  intervalMs: number,
  onError: (error: unknown) => void,
): ProgressReporter {
  let current: Progress = { ...EMPTY_PROGRESS };
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();

  const send = () => {
    timer = undefined;
    const snapshot = current;
    inFlight = inFlight.then(() => publish(snapshot)).catch(onError);
    return inFlight;
  };

  return {
    get current() {
      return current;
    },
    update(change, mode = 'add') {
      const next = { ...current };
      for (const [key, value] of Object.entries(change) as Array<[keyof Progress, number]>) {
        next[key] = mode === 'add' ? next[key] + value : value;
      }
      current = next;
      timer ??= setTimeout(send, intervalMs);
    },
    async flush() {
      if (timer) clearTimeout(timer);
      await send();
    },
  };
}
