import { parseArgs } from 'node:util';
import { UsageError } from './errors.js';
import { LISTABLE_STATUSES } from './job-view.js';

export const HELP = `Usage: ferry <command> [options]

Commands:
  submit <job_url> [--release R] [--artifacts GLOB...] [--no-skip-existing] [--follow]
                           Submit a download; --follow then follows it like logs --follow
  status <id>              Show a job's status
  logs <id> [--follow] [--after CURSOR]
                           Print a job's log; --follow waits for new lines until the job ends,
                           reconnecting after a dropped connection without losing or repeating a line
  cancel <id>              Cancel a pending or running job
  list [--status S] [--release R] [--limit N] [--cursor ID]
                           List jobs, newest first (S: ${LISTABLE_STATUSES.join(', ')})

Options:
  --json                   JSON output: one document (submit, status, cancel, list), or one JSON
                           object per line (logs, --follow): {"type":"line"|"progress"|"end"|"submitted", ...}
  --artifacts GLOB...      Include globs; takes every value up to the next option, and may repeat
  -h, --help               Show this help

Environment:
  FERRY_URL                The API, default http://127.0.0.1:3000
  FERRY_TOKEN              API token, sent as Authorization: Bearer (needed when the API has API_TOKENS)

Exit codes:
  0    done (a followed job completed)
  1    usage error, HTTP error, or the API out of reach
  2    the job failed (submit --follow, logs, status)
  3    the job was cancelled (submit --follow, logs, status)
  130  interrupted (Ctrl-C)

A progress bar is drawn while following when stdout is a terminal (not with --json).
`;

export type Command =
  | { name: 'help' }
  | { name: 'submit'; jobUrl: string; release?: string; artifacts?: string[]; skipExisting: boolean; follow: boolean; json: boolean }
  | { name: 'status'; id: string; json: boolean }
  | { name: 'logs'; id: string; follow: boolean; after?: string; json: boolean }
  | { name: 'cancel'; id: string; json: boolean }
  | { name: 'list'; status?: string; release?: string; limit?: string; cursor?: string; json: boolean };

const OPTIONS = {
  release: { type: 'string' },
  artifacts: { type: 'string', multiple: true },
  'no-skip-existing': { type: 'boolean' },
  follow: { type: 'boolean', short: 'f' },
  after: { type: 'string' },
  json: { type: 'boolean' },
  status: { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Options each command takes besides --json and --help. */
const ALLOWED: Record<Exclude<Command['name'], 'help'>, readonly string[]> = {
  submit: ['release', 'artifacts', 'no-skip-existing', 'follow'],
  status: [],
  logs: ['follow', 'after'],
  cancel: [],
  list: ['status', 'release', 'limit', 'cursor'],
};

/** Parses `ferry <command> ...` (argv without node and the script); throws UsageError. */
export function parseCommandLine(argv: readonly string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const { values, tokens } = parsed;
  // `--artifacts a b c`: positionals right after --artifacts (before any other option or `--`) are globs too.
  const positionals: string[] = [];
  const artifacts: string[] = [];
  let inArtifacts = false;
  for (const token of tokens) {
    if (token.kind === 'option') {
      inArtifacts = token.name === 'artifacts';
      if (inArtifacts && token.value !== undefined) artifacts.push(token.value);
    } else if (token.kind === 'option-terminator') {
      inArtifacts = false;
    } else if (inArtifacts && !/^https?:\/\//i.test(token.value)) {
      // A URL is the job URL, never a glob: `submit --artifacts 'a/**' https://...` works too.
      artifacts.push(token.value);
    } else {
      positionals.push(token.value);
    }
  }

  const [name, ...args] = positionals;
  if (values.help || name === undefined || name === 'help') {
    if (name === undefined && !values.help) throw new UsageError('no command given');
    return { name: 'help' };
  }
  if (!(name in ALLOWED)) throw new UsageError(`unknown command "${name}"`);
  const command = name as keyof typeof ALLOWED;
  const given = Object.keys(values).filter((option) => option !== 'json' && option !== 'help');
  const refused = given.filter((option) => !ALLOWED[command].includes(option));
  if (refused.length > 0) throw new UsageError(`${command} does not take ${refused.map((option) => `--${option}`).join(', ')}`);
  const json = values.json === true;

  const one = (what: string): string => {
    if (args.length !== 1 || !args[0]) throw new UsageError(`${command} takes one ${what}, got ${args.length === 0 ? 'none' : args.join(' ')}`);
    return args[0];
  };
  switch (command) {
    case 'submit':
      return {
        name: 'submit',
        jobUrl: one('job URL'),
        ...(values.release !== undefined ? { release: values.release } : {}),
        ...(artifacts.length > 0 ? { artifacts } : {}),
        skipExisting: values['no-skip-existing'] !== true,
        follow: values.follow === true,
        json,
      };
    case 'status':
    case 'cancel':
      return { name: command, id: one('job id'), json };
    case 'logs':
      return { name: 'logs', id: one('job id'), follow: values.follow === true, ...(values.after !== undefined ? { after: values.after } : {}), json };
    case 'list': {
      if (args.length > 0) throw new UsageError(`list takes no arguments, got ${args.join(' ')}`);
      if (values.status !== undefined && !(LISTABLE_STATUSES as readonly string[]).includes(values.status)) {
        throw new UsageError(`--status must be one of ${LISTABLE_STATUSES.join(', ')}`);
      }
      if (values.limit !== undefined && !/^\d+$/.test(values.limit)) throw new UsageError('--limit must be a number');
      return {
        name: 'list',
        ...(values.status !== undefined ? { status: values.status } : {}),
        ...(values.release !== undefined ? { release: values.release } : {}),
        ...(values.limit !== undefined ? { limit: values.limit } : {}),
        ...(values.cursor !== undefined ? { cursor: values.cursor } : {}),
        json,
      };
    }
  }
}
