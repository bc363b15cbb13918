import type { Logger } from './logger.js';

export interface Shutdown {
  /** Registers a cleanup; cleanups run last-in-first-out. */
  add(name: string, cleanup: () => Promise<void> | void): void;
  /** Runs every cleanup once, LIFO, within the timeout. Idempotent: later calls get the same promise. */
  run(reason: string): Promise<void>;
  /** Calls run() on SIGTERM/SIGINT; a second signal forces the exit. */
  onSignals(exit: (code: number) => void): void;
}

export function createShutdown(logger: Logger, timeoutMs: number): Shutdown {
  const cleanups: Array<{ name: string; cleanup: () => Promise<void> | void }> = [];
  let running: Promise<void> | undefined;

  const runAll = async () => {
    for (const { name, cleanup } of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        logger.error('shutdown step failed', { step: name, error });
      }
    }
  };

  const shutdown: Shutdown = {
    add(name, cleanup) {
      cleanups.push({ name, cleanup });
    },
    run(reason) {
      running ??= (async () => {
        logger.info('shutting down', { reason });
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            logger.warn('shutdown timed out; exiting anyway', { timeout_ms: timeoutMs });
            resolve();
          }, timeoutMs);
          timer.unref();
        });
        await Promise.race([runAll(), timeout]);
        clearTimeout(timer);
      })();
      return running;
    },
    onSignals(exit) {
      let signals = 0;
      const handler = (signal: NodeJS.Signals) => {
        signals += 1;
        if (signals > 1) {
          logger.warn('second signal: forcing exit', { signal });
          exit(1);
          return;
        }
        void shutdown.run(signal).then(() => exit(0));
      };
      process.on('SIGTERM', handler);
      process.on('SIGINT', handler);
    },
  };
  return shutdown;
}
