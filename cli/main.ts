#!/usr/bin/env node
// The `ferry` command (package.json "bin"): the CLI's composition root, the only place that reads
// process.argv, process.env and the real stdout/stderr, and that handles signals.
import { EXIT } from './exit-codes.js';
import { runCli } from './run-cli.js';

const controller = new AbortController();
// First Ctrl-C stops the command cleanly (the progress bar is erased, exit 130); `once` leaves a
// second Ctrl-C to Node's default, which ends the process at once.
process.once('SIGINT', () => controller.abort(new Error('interrupted')));
// `ferry logs <id> | head`: the reader went away; that is not an error.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(EXIT.OK);
  throw error;
});

process.exitCode = await runCli({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: process.stdout,
  stderr: process.stderr,
  signal: controller.signal,
});
