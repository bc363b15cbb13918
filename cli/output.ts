import type { Progress } from '../shared/job-contract.js';
import { renderProgressBar } from './format.js';

/** Where the CLI writes: process.stdout and process.stderr, or test doubles. */
export interface OutputStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

export interface Output {
  /** Whether `--json` was given: one JSON document, or one JSON object per line for logs. */
  readonly json: boolean;
  /** A line of human output on stdout. */
  line(text: string): void;
  /** One JSON value as one line on stdout. */
  jsonLine(value: unknown): void;
  /** A progress snapshot: redraws the bar when stdout is a terminal and not `--json`, else nothing. */
  progress(progress: Progress): void;
  /** A notice on stderr (reconnects, retries, errors), never mixed into stdout's data. */
  notice(text: string): void;
  /** Erases the bar, if one is shown. */
  close(): void;
}

/** Milliseconds between two redraws of the bar: a busy job sends many snapshots a second. */
const REDRAW_MS = 100;
const ERASE_LINE = '\r\x1b[2K';

/**
 * Human lines, JSON lines and a one-line progress bar on one stdout. The bar is redrawn in place
 * with `\r`; before any other text it is erased, and drawn again after it, so log lines scroll
 * above it and never get cut.
 */
export function createOutput(stdout: OutputStream, stderr: OutputStream, json: boolean, now: () => number = Date.now): Output {
  const barEnabled = stdout.isTTY === true && !json;
  let shown = false;
  let latest: Progress | undefined;
  let drawnAt = 0;
  let deferred: NodeJS.Timeout | undefined;

  const erase = () => {
    if (!shown) return;
    stdout.write(ERASE_LINE);
    shown = false;
  };
  const draw = () => {
    clearTimeout(deferred);
    deferred = undefined;
    if (!barEnabled || !latest) return;
    stdout.write(`${ERASE_LINE}${renderProgressBar(latest, stdout.columns || 80)}`);
    shown = true;
    drawnAt = now();
  };

  return {
    json,
    line(text) {
      erase();
      stdout.write(`${text}\n`);
      draw();
    },
    jsonLine(value) {
      stdout.write(`${JSON.stringify(value)}\n`);
    },
    progress(progress) {
      latest = progress;
      if (!barEnabled) return;
      const wait = REDRAW_MS - (now() - drawnAt);
      if (wait <= 0) draw();
      // Throttled: draw this snapshot a little later, so a quiet job never shows a stale bar.
      else deferred ??= setTimeout(draw, wait).unref();
    },
    notice(text) {
      // stderr is usually the same terminal: keep the bar off the notice's line.
      const hadBar = shown;
      erase();
      stderr.write(`${text}\n`);
      if (hadBar) draw();
    },
    close() {
      clearTimeout(deferred);
      deferred = undefined;
      latest = undefined;
      erase();
    },
  };
}
