import { createApiClient } from './api-client.js';
import { HELP, parseCommandLine } from './args.js';
import { runCommand } from './commands.js';
import { ApiError, ConnectionError, describeError, UsageError } from './errors.js';
import { EXIT } from './exit-codes.js';
import { createOutput, type OutputStream } from './output.js';

/** The API a CLI talks to when FERRY_URL is unset: the API's own default HOST and PORT. */
export const DEFAULT_URL = 'http://127.0.0.1:3000';

export interface CliOptions {
  /** Arguments after `ferry`. */
  readonly argv: readonly string[];
  /** Reads FERRY_URL and FERRY_TOKEN. */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: OutputStream;
  readonly stderr: OutputStream;
  /** Aborts the command (Ctrl-C): it stops and answers 130. */
  readonly signal: AbortSignal;
  readonly fetch?: typeof fetch;
}

/** Runs the CLI once and returns its exit code (see EXIT). Writes only through stdout and stderr. */
export async function runCli(options: CliOptions): Promise<number> {
  const { stdout, stderr, env, signal } = options;
  let command;
  let baseUrl: string;
  try {
    command = parseCommandLine(options.argv);
    if (command.name === 'help') {
      stdout.write(HELP);
      return EXIT.OK;
    }
    baseUrl = parseBaseUrl(env.FERRY_URL);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    stderr.write(`ferry: ${error.message}\nRun "ferry --help" for usage.\n`);
    return EXIT.ERROR;
  }

  const token = env.FERRY_TOKEN?.trim() || undefined;
  const out = createOutput(stdout, stderr, command.json);
  const client = createApiClient({
    baseUrl,
    token,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    onRetry: (reason, delayMs) => out.notice(`ferry: ${reason}; retrying in ${(delayMs / 1000).toFixed(1)} s`),
  });
  try {
    return await runCommand({ client, out, signal }, command);
  } catch (error) {
    out.close();
    if (signal.aborted) return EXIT.INTERRUPTED;
    out.notice(`ferry: ${describeError(error)}${hint(error, baseUrl, token !== undefined)}`);
    return EXIT.ERROR;
  }
}

function parseBaseUrl(value: string | undefined): string {
  const raw = value?.trim() || DEFAULT_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`FERRY_URL is not a URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`FERRY_URL must be an http(s) URL, got ${raw}`);
  return url.toString();
}

/** What to do about the common failures, after the API's own message. */
function hint(error: unknown, baseUrl: string, hasToken: boolean): string {
  if (error instanceof ApiError && error.status === 401) {
    return hasToken
      ? '\nFERRY_TOKEN was not accepted: check it against the API_TOKENS of the API.'
      : '\nThis API requires a token: set FERRY_TOKEN to one of its API_TOKENS.';
  }
  if (error instanceof ApiError && error.status === 403) return "\nFERRY_TOKEN's role does not allow this (read < write < admin).";
  if (error instanceof ConnectionError) return `\nIs the API running at FERRY_URL=${baseUrl}?`;
  return '';
}
