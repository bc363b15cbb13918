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

describe('the API refuses to run open on the network', () => {
  const run = (env: Record<string, string>) =>
    spawnSync(process.execPath, [path.join(ROOT, 'dist/api/main.js')], {
      cwd: os.tmpdir(),
      // A Redis nobody listens on: the refusals happen before any connection.
      env: { PATH: process.env.PATH ?? '', JENKINS_URL: 'https://jenkins.example/', REDIS_URL: 'redis://127.0.0.1:1', PORT: '0', ...env },
      encoding: 'utf8',
      timeout: 15_000,
    });

  it('without API_TOKENS on a non-loopback HOST it stops, saying how to set API_TOKENS', () => {
    const result = run({ HOST: '0.0.0.0' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('API_TOKENS: required when HOST (0.0.0.0) is not a loopback address');
    expect(result.stderr).toContain('AUTH_DISABLED=true');
  });

  it('API_TOKENS without TOKEN_SECRET stops, and malformed entries are named without echoing tokens', () => {
    const missing = run({ API_TOKENS: 'admin:ops:abcdefghijklmnop-secret' });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('TOKEN_SECRET: required when API_TOKENS is set');
    expect(missing.stderr).not.toContain('abcdefghijklmnop-secret');
    const malformed = run({ API_TOKENS: 'boss:abcdefghijklmnop-secret,read:short', TOKEN_SECRET: 'x'.repeat(32) });
    expect(malformed.status).toBe(1);
    expect(malformed.stderr).toContain('API_TOKENS');
    expect(malformed.stderr).toContain('roles are read, write, admin');
    expect(malformed.stderr).toContain('at least 16 characters');
    expect(malformed.stderr).not.toContain('abcdefghijklmnop-secret');
  });

  it('AUTH_DISABLED=true runs open on any address, with a warning', () => {
    const result = spawnSync(process.execPath, ['-e', `
      process.env.HOST = '0.0.0.0'; process.env.AUTH_DISABLED = 'true';
      setTimeout(() => process.kill(process.pid, 'SIGTERM'), 1500);
      await import(${JSON.stringify(path.join(ROOT, 'dist/api/main.js'))});
    `, '--input-type=module'], {
      cwd: os.tmpdir(),
      env: { PATH: process.env.PATH ?? '', JENKINS_URL: 'https://jenkins.example/', REDIS_URL: 'redis://127.0.0.1:1', PORT: '0', NODE_ENV: 'production' },
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(result.stdout + result.stderr).toContain('AUTH_DISABLED=true: the API is open to anyone who can reach it');
  });
});
