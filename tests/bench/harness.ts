/**
 * Shared parts of `npm run bench`: the machine description, the figure lines every scenario prints
 * (figure, baseline, ratio, goal, PASS/MISS), the JSON record the runner merges into
 * bench-results.json, and process measurements read from /proc (RSS, Redis connections).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';

/** `npm run bench -- --quick`: smaller sizes, shorter runs (the runner sets BENCH_QUICK=1). */
export const QUICK = process.env.BENCH_QUICK === '1';

/** Repository root (cwd of every process the bench starts). */
export const ROOT = new URL('../..', import.meta.url).pathname;

export interface Machine {
  readonly cores: number;
  readonly cpu: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly redis: string;
  readonly kernel: string;
  /** 1-minute load average when the scenario started (the machine is shared). */
  readonly loadAverage: number;
}

export async function describeMachine(redis: Redis): Promise<Machine> {
  const info = await redis.info('server');
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    kernel: os.release(),
    loadAverage: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
  };
}

/**
 * One measured figure. `value` and `baseline` share `unit`; `ratio` is value / baseline, or what the
 * scenario gave (e.g. the median of per-round ratios, when rounds pair each value with a baseline).
 */
export interface Figure {
  readonly name: string;
  readonly unit: string;
  readonly value: number | null;
  readonly baseline: number | null;
  readonly ratio: number | null;
  /** Human text of the goal, e.g. 'ratio >= 0.8'; empty when the figure is reported for orientation. */
  readonly goal: string;
  /** true PASS, false MISS, null: no goal. */
  readonly pass: boolean | null;
  readonly note?: string;
}

export type Goal =
  | { readonly ratioAtLeast: number }
  | { readonly ratioAtMost: number }
  | { readonly atLeast: number }
  | { readonly below: number }
  | { readonly atMost: number }
  /** A goal the scenario decides itself (e.g. "equal at 10 and 1,000 clients"). */
  | { readonly text: string; readonly pass: boolean };

function judge(goal: Goal | undefined, value: number | null, ratio: number | null, unit: string): { goal: string; pass: boolean | null } {
  if (!goal) return { goal: '', pass: null };
  if ('text' in goal) return { goal: goal.text, pass: goal.pass };
  if ('ratioAtLeast' in goal) return { goal: `ratio >= ${goal.ratioAtLeast}`, pass: ratio !== null && ratio >= goal.ratioAtLeast };
  if ('ratioAtMost' in goal) return { goal: `ratio <= ${goal.ratioAtMost}`, pass: ratio !== null && ratio <= goal.ratioAtMost };
  if ('atLeast' in goal) return { goal: `>= ${formatNumber(goal.atLeast)} ${unit}`, pass: value !== null && value >= goal.atLeast };
  if ('below' in goal) return { goal: `< ${formatNumber(goal.below)} ${unit}`, pass: value !== null && value < goal.below };
  return { goal: `<= ${formatNumber(goal.atMost)} ${unit}`, pass: value !== null && value <= goal.atMost };
}

export function formatNumber(value: number | null): string {
  if (value === null || !Number.isFinite(value)) return '-';
  const abs = Math.abs(value);
  if (abs >= 1000 || Number.isInteger(value)) return Math.round(value).toLocaleString('en-US');
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/**
 * Two decimals; where the goal is a ratio, three, rounded away from the goal's side (down for
 * `ratio >=`, up for `ratio <=`), so a figure that misses never prints as meeting it (0.6998 as 0.70).
 */
export function formatRatio(ratio: number, goal: string): string {
  if (goal.startsWith('ratio >=')) return (Math.floor(ratio * 1000) / 1000).toFixed(3);
  if (goal.startsWith('ratio <=')) return (Math.ceil(ratio * 1000) / 1000).toFixed(3);
  return ratio.toFixed(2);
}

const pad = (text: string, width: number) => (text.length >= width ? text : text + ' '.repeat(width - text.length));
const padStart = (text: string, width: number) => (text.length >= width ? text : ' '.repeat(width - text.length) + text);

/** The one line printed per figure. */
export function formatFigure(figure: Figure): string {
  const verdict = figure.pass === null ? '' : figure.pass ? 'PASS' : 'MISS';
  const value = `${formatNumber(figure.value)} ${figure.unit}`;
  const baseline = figure.baseline === null ? '-' : `${formatNumber(figure.baseline)} ${figure.unit}`;
  const ratio = figure.ratio === null ? '-' : formatRatio(figure.ratio, figure.goal);
  return (
    `  ${pad(figure.name, 44)} ${padStart(value, 16)}  baseline ${padStart(baseline, 16)}  ratio ${padStart(ratio, 5)}` +
    `  goal ${pad(figure.goal || '-', 22)} ${verdict}${figure.note ? `  (${figure.note})` : ''}`
  );
}

export function formatMachine(machine: Machine): string {
  return (
    `  machine: ${machine.cores} cores x ${machine.cpu}, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, ` +
    `Node ${machine.node}, Redis ${machine.redis}, load average ${machine.loadAverage} at start` +
    `${QUICK ? '; QUICK MODE (smaller sizes, shorter runs)' : ''}`
  );
}

export interface ScenarioRecord {
  readonly scenario: string;
  readonly title: string;
  readonly quick: boolean;
  readonly machine: Machine;
  readonly figures: Figure[];
  readonly notes: string[];
  readonly startedAt: string;
  durationMs: number;
  loadAverageAtEnd: number;
}

export interface Report {
  /** Adds and prints one figure line. */
  figure(name: string, unit: string, value: number | null, options?: { baseline?: number | null; ratio?: number | null; goal?: Goal; note?: string }): Figure;
  /** Prints and records a note (a detail, a profile finding, a limit). */
  note(text: string): void;
  /** Prints a progress line (not recorded). */
  log(text: string): void;
  /** Writes the scenario's JSON for the runner (BENCH_OUT_DIR/<scenario>.json). */
  save(): Promise<void>;
}

/** Starts a scenario's report: prints its title and machine line. */
export function createReport(scenario: string, title: string, machine: Machine): Report {
  const started = Date.now();
  const record: ScenarioRecord = {
    scenario,
    title,
    quick: QUICK,
    machine,
    figures: [],
    notes: [],
    startedAt: new Date(started).toISOString(),
    durationMs: 0,
    loadAverageAtEnd: 0,
  };
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`\n== ${title} ==`);
  out(formatMachine(machine));
  return {
    figure(name, unit, value, options = {}) {
      const baseline = options.baseline ?? null;
      const ratio = options.ratio !== undefined ? options.ratio : value !== null && baseline !== null && baseline !== 0 ? value / baseline : null;
      const { goal, pass } = judge(options.goal, value, ratio, unit);
      const figure: Figure = { name, unit, value, baseline, ratio, goal, pass, ...(options.note ? { note: options.note } : {}) };
      record.figures.push(figure);
      out(formatFigure(figure));
      return figure;
    },
    note(text) {
      record.notes.push(text);
      out(`  note: ${text}`);
    },
    log(text) {
      out(`  .. ${text}`);
    },
    async save() {
      record.durationMs = Date.now() - started;
      record.loadAverageAtEnd = Math.round((os.loadavg()[0] ?? 0) * 100) / 100;
      out(`  (${scenario}: ${(record.durationMs / 1000).toFixed(1)} s, load average ${record.loadAverageAtEnd} at the end)`);
      const dir = process.env.BENCH_OUT_DIR;
      if (dir) await writeFile(path.join(dir, `${scenario}.json`), JSON.stringify(record, null, 2));
    },
  };
}

/** The p-th percentile (0-100) of unsorted values, nearest rank; null when empty. */
export function percentile(values: ArrayLike<number>, p: number): number | null {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export const median = (values: ArrayLike<number>) => percentile(values, 50);
export const mean = (values: readonly number[]) => (values.length === 0 ? null : values.reduce((a, b) => a + b, 0) / values.length);

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
export const wallClockMs = () => performance.timeOrigin + performance.now();

/** VmRSS and VmHWM (peak RSS) of a process, in MB (10^6 bytes), from /proc/<pid>/status. */
export function processMemory(pid: number): { rssMB: number; peakMB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMB: (kb('VmRSS') * 1024) / 1e6, peakMB: (kb('VmHWM') * 1024) / 1e6 };
}

/** CPU time (user + system) a process has used so far, in seconds, from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** USER_HZ: 100 on every Linux architecture Node supports. */
const CLOCK_TICKS_PER_SECOND = 100;

/** Samples a process's RSS every `everyMs` until stopped; returns the highest sample (MB). */
export function sampleRss(pid: number, everyMs = 200): { stop(): number; readonly maxMB: number } {
  let max = 0;
  const take = () => {
    try {
      max = Math.max(max, processMemory(pid).rssMB);
    } catch {
      // the process is gone
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return max;
    },
    get maxMB() {
      return max;
    },
  };
}

/**
 * The TCP connections from process `pid` to 127.0.0.1:`port`, whatever their names: the process's
 * socket inodes (/proc/<pid>/fd) matched against the established sockets in /proc/<pid>/net/tcp.
 * Returns each connection's local port (which CLIENT LIST shows as `addr=127.0.0.1:<port>`).
 */
export async function tcpConnectionsTo(pid: number, port: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match) inodes.add(match[1] as string);
  }
  const wanted = port.toString(16).toUpperCase().padStart(4, '0');
  const localPorts: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const [local, remote, state, inode] = [fields[1], fields[2], fields[3], fields[9]];
      if (!local || !remote || state !== '01' || !inode || !inodes.has(inode)) continue;
      if (remote.split(':')[1] === wanted) localPorts.push(parseInt(local.split(':')[1] ?? '0', 16));
    }
  }
  return localPorts;
}

/** The names (CLIENT SETNAME) Redis knows for the given client ports, e.g. ['ferry:api', 'ferry:api-log-tail']. */
export async function clientNamesByPort(redis: Redis, ports: readonly number[]): Promise<string[]> {
  const list = String(await redis.client('LIST'));
  const byPort = new Map<number, string>();
  for (const line of list.split('\n')) {
    const port = /\baddr=[^ ]*:(\d+) /.exec(line)?.[1];
    const name = /\bname=(\S*)/.exec(line)?.[1];
    if (port) byPort.set(Number(port), name || '(unnamed)');
  }
  return ports.map((port) => byPort.get(port) ?? '(not in CLIENT LIST)').sort();
}

/** Connections whose CLIENT SETNAME starts with `prefix` (as tests/integration/multi-process.test.ts counts). */
export async function connectionsNamed(redis: Redis, names: readonly string[]): Promise<number> {
  const list = String(await redis.client('LIST'));
  return list.split('\n').filter((line) => names.some((name) => line.includes(`name=${name} `))).length;
}

export interface NodeChild {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly output: () => string;
  /** Resolves with the exit code when the process ends by itself. */
  readonly exited: Promise<number | null>;
  /** SIGTERM to its process group, SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>;
}

/**
 * Starts `node <script> ...args` from the repository root in its own process group (like
 * tests/helpers/processes.ts startScript, for the bench's own baseline scripts). Keeps the last
 * 64 kB of its output.
 */
export function startNode(script: string, args: readonly string[], env: Record<string, string>): NodeChild {
  return startCommand(process.execPath, [script, ...args], env);
}

export function startCommand(command: string, args: readonly string[], env: Record<string, string>): NodeChild {
  const child = spawn(command, [...args], {
    cwd: ROOT,
    env: { ...process.env, NODE_ENV: 'production', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-65_536);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    pid: child.pid as number,
    output: () => output,
    exited,
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const signal = (name: NodeJS.Signals) => {
        try {
          process.kill(-(child.pid as number), name);
        } catch {
          // already gone
        }
      };
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** GET a URL once on a fresh connection; resolves with the status, or 0 when the connection fails. */
export function probeStatus(url: string, timeoutMs = 1_000): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Polls `url` until it answers 200; throws after `timeoutMs` or when `child` exits. */
export async function waitFor200(url: string, child: NodeChild, timeoutMs = 20_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.child.exitCode !== null) throw new Error(`process exited while waiting for ${url}: ${child.output()}`);
    if ((await probeStatus(url)) === 200) return;
    if (Date.now() > deadline) throw new Error(`no 200 from ${url} after ${timeoutMs} ms: ${child.output()}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
