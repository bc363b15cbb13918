import type { Progress } from '../shared/job-contract.js';
import type { LogLine } from './follow-log.js';
import type { JobView } from './job-view.js';

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB'];

/** `1500` → `1.5 kB`: decimal units, as the workers' log lines write sizes. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** How far a job is, 0 to 1, by bytes, else files, else modules; null while nothing is known. */
export function progressRatio(progress: Progress): number | null {
  const pairs: Array<[number, number]> = [
    [progress.bytes_done, progress.bytes_total],
    [progress.files_done, progress.files_total],
    [progress.modules_done, progress.modules_total],
  ];
  const known = pairs.find(([, total]) => total > 0);
  return known ? Math.min(1, known[0] / known[1]) : null;
}

const percent = (ratio: number | null) => (ratio === null ? '-' : `${Math.floor(ratio * 100)}%`);

/** `modules 1/3, files 5/12, 3.2 MiB of 7.6 MiB (42%)`. */
export function formatProgress(progress: Progress): string {
  return (
    `modules ${progress.modules_done}/${progress.modules_total}, files ${progress.files_done}/${progress.files_total}, ` +
    `${formatBytes(progress.bytes_done)} of ${formatBytes(progress.bytes_total)} (${percent(progressRatio(progress))})`
  );
}

/**
 * One line for a terminal, at most `columns - 1` characters so it never wraps (a wrapped line
 * cannot be redrawn with `\r`): `[#######.............]  35%  modules 1/3  files 5/12  1.1 MB/3.2 MB`.
 */
export function renderProgressBar(progress: Progress, columns: number): string {
  const ratio = progressRatio(progress);
  const width = 20;
  const filled = Math.round((ratio ?? 0) * width);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
  const text =
    `${bar} ${percent(ratio).padStart(4)}  modules ${progress.modules_done}/${progress.modules_total}  ` +
    `files ${progress.files_done}/${progress.files_total}  ${formatBytes(progress.bytes_done)}/${formatBytes(progress.bytes_total)}`;
  return text.slice(0, Math.max(10, columns - 1));
}

/** An ISO timestamp as local `HH:MM:SS`. */
export function formatClock(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const two = (value: number) => String(value).padStart(2, '0');
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

export function formatLogLine(line: LogLine): string {
  return `${formatClock(line.timestamp)}  ${line.message}`;
}

/** The end of a log as a line: `Job failed: <error>`, the API's own wording in the JSON pages. */
export function formatEnd(status: string, error: string | null): string {
  return `Job ${status}${error ? `: ${error}` : ''}`;
}

/** A status document as aligned `label  value` lines (fields without a value are left out). */
export function formatStatus(view: JobView): string {
  const files = view.files ?? [];
  const rows: Array<[string, string | null | undefined]> = [
    ['Job', `${view.id}${view.kind === 'batch' ? ' (batch)' : ''}`],
    ['Status', view.status],
    ['Release', view.release],
    ['Job URL', view.job_url],
    ['Batch', view.batch_id],
    ['Progress', formatProgress(view.progress)],
    ['Accepted', view.started_at],
    ['Running since', view.running_since],
    ['Ended', view.completed_at],
    ['Attempts', String(view.attempts)],
    ['Submitted by', view.submitted_by ? `${view.submitted_by.label} (${view.submitted_by.role})` : null],
    ['Files', view.files ? `${files.length} (${formatBytes(files.reduce((sum, file) => sum + file.size, 0))})` : null],
    ['Modules', view.modules ? String(view.modules.length) : null],
    ['Error', view.error],
  ];
  const shown = rows.filter((row): row is [string, string] => typeof row[1] === 'string' && row[1] !== '');
  const width = Math.max(...shown.map(([label]) => label.length));
  const lines = shown.map(([label, value]) => `${label.padEnd(width)}  ${value}`);
  for (const failed of view.failed_modules ?? []) lines.push(`  failed module ${failed.module}: ${failed.error ?? 'no reason given'}`);
  return lines.join('\n');
}

/** Jobs as a table, newest first as the API lists them; the job URL last and never cut. */
export function formatJobTable(jobs: readonly JobView[]): string {
  const header = ['ID', 'STATUS', 'RELEASE', 'PROGRESS', 'ACCEPTED', 'JOB'];
  const rows = jobs.map((job) => [
    job.id,
    job.status,
    job.release ?? '-',
    percent(progressRatio(job.progress)),
    job.started_at ?? '-',
    job.job_url ?? (job.kind === 'batch' ? '(batch)' : '-'),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)));
  return [header, ...rows]
    .map((row) => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column] ?? 0))).join('  '))
    .join('\n');
}
