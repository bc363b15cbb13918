import type { ApiClient } from './api-client.js';
import type { Command } from './args.js';
import { ApiError } from './errors.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { followLog, type LogEnd } from './follow-log.js';
import { formatClock, formatEnd, formatJobTable, formatLogLine, formatStatus } from './format.js';
import type { JobView, LogPage, SubmitAnswer } from './job-view.js';
import type { Output } from './output.js';

export interface CommandContext {
  readonly client: ApiClient;
  readonly out: Output;
  readonly signal: AbortSignal;
}

const BASE = 'api/v1/jenkins';
/** Lines per JSON log page: the API's maximum, so a long log takes few round trips. */
const PAGE_LINES = 1_000;
const jobPath = (id: string, suffix = '') => `${BASE}/download/${encodeURIComponent(id)}${suffix}`;

/** Runs one parsed command and returns the process exit code. */
export async function runCommand(ctx: CommandContext, command: Exclude<Command, { name: 'help' }>): Promise<number> {
  switch (command.name) {
    case 'submit':
      return submit(ctx, command);
    case 'status':
      return status(ctx, command.id);
    case 'logs':
      return command.follow ? follow(ctx, command.id, command.after) : logs(ctx, command.id, command.after);
    case 'cancel':
      return cancel(ctx, command.id);
    case 'list':
      return list(ctx, command);
  }
}

async function submit(ctx: CommandContext, command: Extract<Command, { name: 'submit' }>): Promise<number> {
  const { client, out, signal } = ctx;
  const body = {
    job_url: command.jobUrl,
    ...(command.release !== undefined ? { release: command.release } : {}),
    ...(command.artifacts ? { artifacts: command.artifacts } : {}),
    ...(command.skipExisting ? {} : { skip_existing: false }),
  };
  // idempotent: a retry after a lost answer or a 503 gets the same job, never a second one.
  const answer = (await client.request<SubmitAnswer>('POST', `${BASE}/download`, { body, idempotent: true, signal })).body;
  const id = answer.job_id;
  if (out.json) {
    out.jsonLine(command.follow ? { type: 'submitted', ...answer } : answer);
  } else {
    out.line(`Job ${id} ${answer.deduplicated ? 'deduplicated' : 'accepted'}: ${answer.message}`);
    if (!command.follow) out.line(`Follow it with: ferry logs ${id} --follow`);
  }
  return command.follow ? follow(ctx, id, undefined) : EXIT.OK;
}

async function status(ctx: CommandContext, id: string): Promise<number> {
  const view = (await ctx.client.request<JobView>('GET', jobPath(id, '/status'), { signal: ctx.signal })).body;
  if (ctx.out.json) ctx.out.jsonLine(view);
  else ctx.out.line(formatStatus(view));
  return exitCodeFor(view.status);
}

/** The log so far, page by page; exits by the job's status once the log has its end. */
async function logs(ctx: CommandContext, id: string, after: string | undefined): Promise<number> {
  const { client, out, signal } = ctx;
  let cursor = after;
  let end: LogEnd | undefined;
  for (;;) {
    const page = (
      await client.request<LogPage & { dropped?: number }>('GET', jobPath(id, '/logs'), {
        query: { after: cursor, limit: String(PAGE_LINES) },
        signal,
      })
    ).body;
    if (page.dropped) out.notice(`ferry: ${page.dropped} earlier line(s) were trimmed (MAX_LOG_LINES)`);
    for (const [index, line] of page.lines.entries()) {
      // Only the log's last entry ends it; an earlier one with a status ended a retried attempt.
      const isEnd = line.status !== undefined && page.done && index === page.lines.length - 1;
      if (isEnd && line.status) end = { id: line.id, status: line.status, error: line.error ?? null };
      if (out.json) {
        out.jsonLine(isEnd && end ? { type: 'end', ...end } : { type: 'line', id: line.id, timestamp: line.timestamp, message: line.message });
      } else {
        out.line(formatLogLine(line));
      }
    }
    if (page.done || page.lines.length < PAGE_LINES || page.next === null) break;
    cursor = page.next;
  }
  return end ? exitCodeFor(end.status) : EXIT.OK;
}

/** Follows the live log to its end (SSE, resuming across dropped connections). */
async function follow(ctx: CommandContext, id: string, after: string | undefined): Promise<number> {
  const { client, out, signal } = ctx;
  const end = await followLog({
    client,
    jobId: id,
    after,
    signal,
    onLine: (line) => (out.json ? out.jsonLine({ type: 'line', ...line }) : out.line(formatLogLine(line))),
    onProgress: (progress) => (out.json ? out.jsonLine({ type: 'progress', ...progress }) : out.progress(progress)),
    onReconnect: ({ reason, lastEventId, delayMs }) =>
      out.notice(
        `ferry: log stream interrupted (${reason}); reconnecting in ${(delayMs / 1000).toFixed(1)} s` +
          (lastEventId ? `, resuming after line ${lastEventId}` : ''),
      ),
  });
  out.close();
  if (out.json) out.jsonLine({ type: 'end', ...end });
  else out.line(`${formatClock(new Date().toISOString())}  ${formatEnd(end.status, end.error)}`);
  return exitCodeFor(end.status);
}

async function cancel(ctx: CommandContext, id: string): Promise<number> {
  const { client, out, signal } = ctx;
  try {
    const answer = await client.request<{ job_id: string; status: string; message: string }>('POST', jobPath(id, '/cancel'), { signal });
    if (out.json) out.jsonLine(answer.body);
    else out.line(answer.body.status === 'cancelled' ? `Job ${id} cancelled` : `Job ${id} cancelling: ${answer.body.message}`);
    return EXIT.OK;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 409) throw error;
    // 409: the job had already ended. Already cancelled is what was asked for (a retried cancel).
    const view = (await client.request<JobView>('GET', jobPath(id, '/status'), { signal })).body;
    if (view.status !== 'cancelled') throw new ApiError(409, error.code, `job ${id} already ${view.status}; nothing to cancel`);
    if (out.json) out.jsonLine({ job_id: id, status: 'cancelled', message: `Job ${id} was already cancelled` });
    else out.line(`Job ${id} was already cancelled`);
    return EXIT.OK;
  }
}

async function list(ctx: CommandContext, command: Extract<Command, { name: 'list' }>): Promise<number> {
  const { client, out, signal } = ctx;
  const query = { status: command.status, release: command.release, limit: command.limit, cursor: command.cursor };
  const page = (await client.request<{ jobs: JobView[]; next: string | null }>('GET', `${BASE}/downloads`, { query, signal })).body;
  if (out.json) {
    out.jsonLine(page);
    return EXIT.OK;
  }
  out.line(page.jobs.length > 0 ? formatJobTable(page.jobs) : 'No jobs');
  if (page.next) {
    const same = `${command.status ? ` --status ${command.status}` : ''}${command.release ? ` --release ${command.release}` : ''}${command.limit !== undefined ? ` --limit ${command.limit}` : ''}`;
    out.notice(`More: ferry list${same} --cursor ${page.next}`);
  }
  return EXIT.OK;
}
