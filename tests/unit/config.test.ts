import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig({ JENKINS_URL: 'https://jenkins.example/ci' });
    expect(config).toMatchObject({
      redisUrl: 'redis://127.0.0.1:6379',
      host: '127.0.0.1',
      port: 3000,
      downloadDir: './downloads',
      jenkins: { url: 'https://jenkins.example/ci/' },
      artifactInclude: [],
      jobTtlSeconds: 86_400,
      logTtlSeconds: 86_400,
      maxLogLines: 10_000,
      logLevel: 'info',
    });
  });

  it('LOG_TTL_SECONDS defaults to JOB_TTL_SECONDS, and ARTIFACT_INCLUDE splits on commas', () => {
    const config = loadConfig({ JENKINS_URL: 'https://j.example/', JOB_TTL_SECONDS: '60', ARTIFACT_INCLUDE: ' a/**/*.xml , ,b.txt' });
    expect(config.logTtlSeconds).toBe(60);
    expect(config.artifactInclude).toEqual(['a/**/*.xml', 'b.txt']);
  });

  it('DOWNLOAD_WRITER_THREADS: 2 by default, 1 to 16 accepted, anything else refused', () => {
    expect(loadConfig({ JENKINS_URL: 'https://j.example/' }).transfer.writerThreads).toBe(2);
    expect(loadConfig({ JENKINS_URL: 'https://j.example/', DOWNLOAD_WRITER_THREADS: '16' }).transfer.writerThreads).toBe(16);
    for (const bad of ['0', '17', '1.5', 'two']) {
      expect(() => loadConfig({ JENKINS_URL: 'https://j.example/', DOWNLOAD_WRITER_THREADS: bad })).toThrow(/DOWNLOAD_WRITER_THREADS/);
    }
  });

  it("DOWNLOAD_WRITE_MODE: 'direct' by default, 'buffered' when chosen, anything else refused", () => {
    expect(loadConfig({ JENKINS_URL: 'https://j.example/' }).transfer.writeMode).toBe('direct');
    expect(loadConfig({ JENKINS_URL: 'https://j.example/', DOWNLOAD_WRITE_MODE: 'buffered' }).transfer.writeMode).toBe('buffered');
    expect(() => loadConfig({ JENKINS_URL: 'https://j.example/', DOWNLOAD_WRITE_MODE: 'mmap' })).toThrow(/DOWNLOAD_WRITE_MODE/);
  });

  it('names every bad variable in one message', () => {
    let error: unknown;
    try {
      loadConfig({ PORT: 'eighty', WORKER_CONCURRENCY: '0', REDIS_URL: 'http://nope', LOG_LEVEL: 'loud' });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    for (const name of ['PORT', 'WORKER_CONCURRENCY', 'REDIS_URL', 'LOG_LEVEL', 'JENKINS_URL']) expect(message).toContain(name);
    expect(message).toContain('JENKINS_URL: is required');
  });

  it('names a URL that cannot be parsed at all, with the others, rather than crashing', () => {
    const message = (() => {
      try {
        loadConfig({ JENKINS_URL: 'not-a-url', REDIS_URL: 'redis://h:99999', PORT: 'eighty' });
      } catch (caught) {
        expect(caught).toBeInstanceOf(ConfigError);
        return (caught as Error).message;
      }
      return '';
    })();
    for (const name of ['JENKINS_URL', 'REDIS_URL', 'PORT']) expect(message).toContain(name);
  });

  it('with REDIS_CLUSTER_NODES, QUEUE_PREFIX must begin with a hash tag (a queue\'s keys share a slot)', () => {
    const base = { JENKINS_URL: 'https://j.example/', REDIS_CLUSTER_NODES: '127.0.0.1:7000' };
    expect(() => loadConfig({ ...base, QUEUE_PREFIX: 'ferry' })).toThrow(/QUEUE_PREFIX: must begin with a hash tag in braces/);
    expect(loadConfig({ ...base, QUEUE_PREFIX: '{ferry-b}' }).queuePrefix).toBe('{ferry-b}');
    expect(loadConfig({ JENKINS_URL: 'https://j.example/', QUEUE_PREFIX: 'ferry' }).queuePrefix).toBe('ferry');
  });

  it('takes numbers in decimal digits only, and no timer longer than Node can wait', () => {
    const base = { JENKINS_URL: 'https://j.example/' };
    for (const [name, value] of [['PORT', '0x10'], ['JOB_TTL_SECONDS', '1e2'], ['WORKER_CONCURRENCY', '2.0'], ['MAX_LOG_LINES', '-5']]) {
      expect(() => loadConfig({ ...base, [name as string]: value }), `${name}=${value}`).toThrow(new RegExp(`${name}: must be a whole number written in decimal digits`));
    }
    for (const [name, value] of [['JOB_TIMEOUT_SECONDS', '3000000'], ['PART_SWEEP_INTERVAL_SECONDS', '2147484'], ['SHUTDOWN_TIMEOUT_MS', '2147483648'], ['JOB_LOCK_MS', '9999999999'], ['STALL_SECONDS', '2147484']]) {
      expect(() => loadConfig({ ...base, [name as string]: value }), `${name}=${value}`).toThrow(new RegExp(`${name}: must be at most \\d+ \\(about 24.8 days`));
    }
    const config = loadConfig({ ...base, JOB_TIMEOUT_SECONDS: ' 2147483 ', PORT: '0' });
    expect(config.jobTimeoutMs).toBe(2_147_483_000);
    expect(config.port).toBe(0);
  });

  it('refuses credentials inside JENKINS_URL', () => {
    expect(() => loadConfig({ JENKINS_URL: 'https://u:p@j.example/' })).toThrow(/JENKINS_USER/);
  });
});
