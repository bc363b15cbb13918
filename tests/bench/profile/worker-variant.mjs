// node tests/bench/profile/worker-variant.mjs <parts> [name]: bundles ferry's worker with parts of its
// per-job Redis bookkeeping taken out, into .cmp/<name>/dist/worker/main.js (name: the parts joined
// by "-"). An experiment to measure what those parts cost, never a product: a worker built so keeps
// no live log, no end record, no folder lock, as chosen. Parts (comma-separated):
//   log   the job log bursts (lines and progress snapshot: JobLog.appendBatch does nothing)
//   end   the end record written once BullMQ has the outcome, and the log's keep (JobLog.end, keep)
//   lock  the cancel-marker read and the folder lock (nothing read, the work runs unlocked)
//   all   the three
// Run the small-jobs scenario's ferry workers from it with BENCH_FERRY_WORKER=.cmp/<name>/dist/worker/main.js
// (tests/bench/small-jobs.bench-run.ts), or alternate it with the normal build in the worker-cpu tool
// (WORKERS=dist/worker/main.js,.cmp/<name>/dist/worker/main.js). Fails when a source no longer
// holds the text a part replaces.
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { build } from 'esbuild';
import { bundleOptions } from '../../../bundle.mjs';

/* global console */

/** Text of worker/create-worker-runtime.ts each part replaces, and with what. */
const PARTS = {
  log: [
    [
      `    appendBatch: async (jobId, lines, batchOptions) => {
      await baseLog.appendBatch(jobId, lines, batchOptions);
      metrics.logLine(lines.length);
    },`,
      '    appendBatch: async () => undefined,',
    ],
  ],
  end: [['  const jobLog: JobLog = {\n    ...baseLog,', '  const jobLog: JobLog = {\n    ...baseLog,\n    keep: async () => undefined,\n    end: async () => undefined,']],
  lock: [
    ['const isCancelRequested = async (jobId: string) => (await ops.exists(keys.cancelRequest(jobId))) === 1;', 'const isCancelRequested = async (_jobId: string) => false;'],
    [
      'folderLock: createFolderLock(ops, keys, config.jobLockMs),',
      'folderLock: { withLock: (_dir: string, _jobId: string, _signal: AbortSignal, _onWait: unknown, work: () => Promise<unknown>) => work() } as never,',
    ],
  ],
};

const [partsArgument = '', nameArgument] = process.argv.slice(2);
const parts = partsArgument === 'all' ? Object.keys(PARTS) : partsArgument.split(',').filter(Boolean);
const unknown = parts.filter((part) => !(part in PARTS));
if (parts.length === 0 || unknown.length > 0) {
  console.error(`usage: worker-variant.mjs <${Object.keys(PARTS).join('|')}|all>[,...] [name]${unknown.length ? ` (unknown: ${unknown.join(', ')})` : ''}`);
  process.exit(2);
}
const name = nameArgument ?? (partsArgument === 'all' ? 'all' : parts.join('-'));

const stubs = {
  name: 'bookkeeping-stubs',
  setup(bundler) {
    bundler.onLoad({ filter: /[\\/]worker[\\/]create-worker-runtime\.ts$/ }, async (args) => {
      let source = await readFile(args.path, 'utf8');
      for (const part of parts) {
        for (const [from, to] of PARTS[part]) {
          if (!source.includes(from)) throw new Error(`worker-variant.mjs: worker/create-worker-runtime.ts no longer holds the text part "${part}" replaces; update PARTS`);
          source = source.replace(from, to);
        }
      }
      return { contents: source, loader: 'ts' };
    });
  },
};

await build({ ...bundleOptions([stubs]), entryPoints: ['worker/main.ts'], outdir: `.cmp/${name}/dist` });
console.log(`.cmp/${name}/dist/worker/main.js: the worker without ${parts.join(', ')}`);
