import { spawn, type ChildProcess } from 'node:child_process';
import { waitFor } from './wait-for.js';

const ROOT = new URL('../..', import.meta.url).pathname;

export interface ChildService {
  readonly child: ChildProcess;
  readonly output: () => string;
  /** SIGTERM to the whole process group, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/**
 * Starts what `npm run <script>` runs (`node dist/<script>/main.js`) in its own process group.
 * npm is left out so the test sees the service's own exit code (npm re-raises the signal).
 */
export function startScript(script: 'api' | 'worker', env: Record<string, string>, entry = `dist/${script}/main.js`): ChildService {
  const child = spawn(process.execPath, [entry], {
    cwd: ROOT,
    env: { ...process.env, NODE_ENV: 'production', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => output,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      try {
        process.kill(-(child.pid as number), 'SIGTERM');
      } catch {
        return child.exitCode;
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-(child.pid as number), 'SIGKILL');
        } catch {
          // already gone
        }
      }, graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Waits until GET <url>/readyz answers 200. */
export async function waitReady(baseUrl: string, service: ChildService): Promise<void> {
  await waitFor(async () => {
    if (service.child.exitCode !== null) throw new Error(`process exited: ${service.output()}`);
    const response = await fetch(`${baseUrl}/readyz`).catch(() => null);
    return response?.status === 200;
  }, `${baseUrl}/readyz`, 20_000, 100);
}
