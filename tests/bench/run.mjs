// `npm run bench [-- --quick] [name...]` (after `npm run build`): runs the scenarios of tests/bench
// with vitest (vitest.bench.config.ts), then merges each scenario's JSON into bench-results.json
// (bench-results.quick.json in quick mode) and prints every figure again as one summary.
// A name (e.g. `status`) runs only the scenario files whose path contains it. `--table` runs nothing
// and prints bench-results.json as the Markdown table the README keeps.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import process from 'node:process';
import { URL } from 'node:url';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const unknown = args.filter((arg) => arg.startsWith('-') && arg !== '--quick' && arg !== '--table');
if (unknown.length > 0) {
  process.stderr.write(`usage: npm run bench [-- --quick] [scenario...] | node tests/bench/run.mjs --table; unknown: ${unknown.join(' ')}\n`);
  process.exit(2);
}
const filters = args.filter((arg) => !arg.startsWith('-'));
const root = new URL('../..', import.meta.url).pathname;

const fmt = (value) => {
  if (value === null || !Number.isFinite(value)) return '-';
  const abs = Math.abs(value);
  if (abs >= 1000 || Number.isInteger(value)) return Math.round(value).toLocaleString('en-US');
  return abs >= 100 ? value.toFixed(0) : abs >= 10 ? value.toFixed(1) : value.toFixed(2);
};
// As harness.ts formatRatio: where the goal is a ratio, three decimals rounded away from the goal's
// side, so a figure that misses never prints as meeting it.
const formatRatio = (ratio, goal) => {
  if (goal.startsWith('ratio >=')) return (Math.floor(ratio * 1000) / 1000).toFixed(3);
  if (goal.startsWith('ratio <=')) return (Math.ceil(ratio * 1000) / 1000).toFixed(3);
  return ratio.toFixed(2);
};

if (args.includes('--table')) {
  const results = JSON.parse(readFileSync(path.join(root, 'bench-results.json'), 'utf8'));
  const rows = ['| # | figure | value | baseline | ratio | goal | |', '| --- | --- | --- | --- | --- | --- | --- |'];
  for (const scenario of results.scenarios) {
    const number = scenario.title.split('.')[0];
    for (const figure of scenario.figures) {
      const verdict = figure.pass === null ? '' : figure.pass ? 'pass' : '**MISS**';
      const cells = [number, figure.name, `${fmt(figure.value)} ${figure.unit}`, figure.baseline === null ? '' : `${fmt(figure.baseline)} ${figure.unit}`,
        figure.ratio === null ? '' : formatRatio(figure.ratio, figure.goal), figure.goal.replaceAll('>=', '≥').replaceAll('<=', '≤'), verdict];
      rows.push(`| ${cells.map((cell) => cell.replaceAll('|', '\\|')).join(' | ')} |`);
    }
  }
  process.stdout.write(`${rows.join('\n')}\n`);
  process.exit(0);
}
const outDir = mkdtempSync(path.join(os.tmpdir(), 'ferry-bench-'));
const vitest = path.join(path.dirname(createRequire(import.meta.url).resolve('vitest/package.json')), 'vitest.mjs');
const started = Date.now();

process.stdout.write(`ferry bench: ${quick ? 'QUICK mode (smaller sizes, shorter runs)' : 'full run'}, ${new Date(started).toISOString()}\n`);
const code = await new Promise((resolve) => {
  const child = spawn(process.execPath, [vitest, 'run', '--config', 'vitest.bench.config.ts', ...filters], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, BENCH_QUICK: quick ? '1' : '0', BENCH_OUT_DIR: outDir },
  });
  child.once('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
});
const durationMs = Date.now() - started;

const scenarios = readdirSync(outDir)
  .filter((file) => file.endsWith('.json'))
  .map((file) => JSON.parse(readFileSync(path.join(outDir, file), 'utf8')))
  .sort((a, b) => a.startedAt.localeCompare(b.startedAt));
rmSync(outDir, { recursive: true, force: true });

const git = (...gitArgs) => {
  try {
    return execFileSync('git', gitArgs, { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
};
const results = {
  date: new Date(started).toISOString(),
  mode: quick ? 'quick' : 'full',
  durationMs,
  commit: git('rev-parse', 'HEAD'),
  uncommittedChanges: (git('status', '--porcelain') ?? '') !== '',
  machine: scenarios[0]?.machine ?? null,
  scenarios,
};
const file = quick ? 'bench-results.quick.json' : 'bench-results.json';
writeFileSync(path.join(root, file), `${JSON.stringify(results, null, 2)}\n`);

const lines = [`\n== summary (${results.mode} run, ${(durationMs / 1000).toFixed(1)} s, written to ${file}) ==`];
let misses = 0;
for (const scenario of scenarios) {
  lines.push(`${scenario.title}`);
  for (const figure of scenario.figures) {
    const verdict = figure.pass === null ? '' : figure.pass ? 'PASS' : 'MISS';
    if (figure.pass === false) misses += 1;
    const baseline = figure.baseline === null ? '' : `  baseline ${fmt(figure.baseline)}`;
    const ratio = figure.ratio === null ? '' : `  ratio ${formatRatio(figure.ratio, figure.goal)}`;
    const goal = figure.goal ? `  goal ${figure.goal}` : '';
    lines.push(`  ${figure.name}: ${fmt(figure.value)} ${figure.unit}${baseline}${ratio}${goal}  ${verdict}`.trimEnd());
  }
}
lines.push(`${misses} figure(s) missed their goal; ${scenarios.length} scenario(s) reported; vitest exit code ${code}`);
process.stdout.write(`${lines.join('\n')}\n`);
process.exit(code);
