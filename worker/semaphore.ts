/** Limits how many operations run at once (JENKINS_MAX_CONNECTIONS per worker process). */
export interface Semaphore {
  run<T>(operation: () => Promise<T>): Promise<T>;
  readonly active: number;
}

export function createSemaphore(limit: number): Semaphore {
  let active = 0;
  const waiting: Array<() => void> = [];
  // A released slot passes straight to the next waiter, so a newcomer cannot take it in between.
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else active -= 1;
  };
  return {
    get active() {
      return active;
    },
    async run(operation) {
      if (active >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
      else active += 1;
      try {
        return await operation();
      } finally {
        release();
      }
    },
  };
}
