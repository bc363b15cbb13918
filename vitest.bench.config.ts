import { BaseSequencer, type TestSpecification } from 'vitest/node';
import { defineConfig } from 'vitest/config';

/** Scenario files in the order the issue lists them (`npm run bench`, via tests/bench/run.mjs). */
const ORDER = ['submit', 'status-at-depth', 'log-fan-out', 'big-artifacts', 'small-jobs', 'cold-start'];
const rank = (file: string) => ORDER.findIndex((name) => file.endsWith(`/${name}.bench-run.ts`));

class ScenarioOrder extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    return [...files].sort((a, b) => rank(a.moduleId) - rank(b.moduleId));
  }
}

// `npm run bench`: every scenario starts its own Redis, fake Jenkins and ferry processes and
// measures its baseline in the same run. One file at a time: they would compete for the 2 cores.
export default defineConfig({
  test: {
    include: ['tests/bench/**/*.bench-run.ts'],
    environment: 'node',
    fileParallelism: false,
    sequence: { sequencer: ScenarioOrder },
    // Figure lines go straight to stdout, in order, without vitest's per-test headers.
    disableConsoleIntercept: true,
    // The longest scenario (log fan-out with 10,000 clients) takes about 2 minutes; the whole suite
    // must stay under 10. A scenario stuck past this is a failure, not a slow figure.
    testTimeout: 300_000,
    hookTimeout: 60_000,
  },
});
