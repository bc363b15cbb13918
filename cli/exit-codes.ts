import type { JobStatus } from '../shared/job-contract.js';

/** Process exit codes, documented in `ferry --help` and the README's "Command line". */
export const EXIT = {
  OK: 0,
  /** Bad usage, an HTTP error, or the API out of reach. */
  ERROR: 1,
  JOB_FAILED: 2,
  JOB_CANCELLED: 3,
  /** Interrupted (Ctrl-C), as a shell reports SIGINT. */
  INTERRUPTED: 130,
} as const;

/** The exit code a job's status calls for: 2 failed, 3 cancelled, else 0 (also while it runs). */
export function exitCodeFor(status: JobStatus): number {
  if (status === 'failed') return EXIT.JOB_FAILED;
  if (status === 'cancelled') return EXIT.JOB_CANCELLED;
  return EXIT.OK;
}
