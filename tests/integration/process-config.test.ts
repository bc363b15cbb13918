import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;

describe('a process with bad configuration stops with one message naming every bad variable', () => {
  it.each(['api', 'worker'])('%s', (service) => {
    const result = spawnSync(process.execPath, [path.join(ROOT, `dist/${service}/main.js`)], {
      cwd: os.tmpdir(),
      env: { PATH: process.env.PATH ?? '', PORT: 'eighty', WORKER_CONCURRENCY: '-1', JENKINS_API_TOKEN: 'do-not-print-me' },
      encoding: 'utf8',
      timeout: 15_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`ferry ${service}: Invalid configuration`);
    for (const name of ['PORT', 'WORKER_CONCURRENCY', 'JENKINS_URL']) expect(result.stderr).toContain(name);
    expect(result.stderr).not.toContain('do-not-print-me');
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('reads .env from the working directory, and the real environment wins over it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-env-'));
    try {
      await writeFile(path.join(dir, '.env'), 'JENKINS_URL=https://jenkins.example/\nPORT=not-a-port\nLOG_LEVEL=loud\n');
      const result = spawnSync(process.execPath, [path.join(ROOT, 'dist/api/main.js')], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn' },
        encoding: 'utf8',
        timeout: 15_000,
      });
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('PORT');
      expect(result.stderr).not.toContain('JENKINS_URL');
      expect(result.stderr).not.toContain('LOG_LEVEL');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
