import type { BatchChild, FileRecord, JobStatus, Progress, Submitter } from '../shared/job-contract.js';

/**
 * A job as `GET .../status` and `GET .../downloads` describe it (api/job-store.ts's
 * JobStatusView, restated from the shared contract: cli/ does not import api/).
 */
export interface JobView {
  id: string;
  release: string | null;
  job_url: string | null;
  status: JobStatus;
  progress: Progress;
  started_at: string | null;
  running_since: string | null;
  completed_at: string | null;
  error: string | null;
  attempts: number;
  files: FileRecord[] | null;
  submitted_by: Submitter | null;
  kind: 'download' | 'batch';
  batch_id?: string;
  modules?: BatchChild[];
  failed_modules?: Array<{ module: string; build_url: string; error: string | null }>;
}

/** `POST /api/v1/jenkins/download`'s answer. */
export interface SubmitAnswer {
  job_id: string;
  deduplicated: boolean;
  message: string;
  logs_url: string;
  status_url: string;
}

/** One page of `GET .../logs`. An entry with `status` is an end of the log (or of an attempt). */
export interface LogPage {
  lines: Array<{ id: string; timestamp: string; message: string; status?: JobStatus; error?: string | null }>;
  next: string | null;
  done: boolean;
}

/** The statuses `list --status` takes; `satisfies` keeps it in step with the shared contract. */
export const LISTABLE_STATUSES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const satisfies readonly JobStatus[];

/** Compiles only while LISTABLE_STATUSES names every status of the contract. */
const _everyStatusListed: [Exclude<JobStatus, (typeof LISTABLE_STATUSES)[number]>] extends [never] ? true : never = true;
