import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.js';
import { createKeys, LOG_GROUPS, logGroup, logGroupOfKey, logWakeKey } from '../../shared/keys.js';

const JENKINS_URL = 'https://jenkins.example/';

describe('Redis mode configuration', () => {
  it('REDIS_CLUSTER_NODES selects Cluster mode with the password and TLS settings', () => {
    const config = loadConfig({ JENKINS_URL, REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-b:7001,[::1]:7002', REDIS_PASSWORD: 'pw', REDIS_TLS: 'true' });
    expect(config.redis).toEqual({
      mode: 'cluster',
      nodes: [{ host: '10.0.0.1', port: 7000 }, { host: 'redis-b', port: 7001 }, { host: '::1', port: 7002 }],
      username: undefined,
      password: 'pw',
      tls: true,
      caFile: undefined,
    });
  });

  it('REDIS_SENTINELS with REDIS_SENTINEL_NAME selects Sentinel mode; neither: REDIS_URL', () => {
    const sentinel = loadConfig({ JENKINS_URL, REDIS_SENTINELS: 's1:26379,s2:26379', REDIS_SENTINEL_NAME: 'main', REDIS_SENTINEL_PASSWORD: 'sp', REDIS_WAIT_REPLICAS: '1' });
    expect(sentinel.redis).toMatchObject({ mode: 'sentinel', name: 'main', sentinelPassword: 'sp', sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }] });
    expect(sentinel.redisWait).toEqual({ replicas: 1, timeoutMs: 1_000 });
    expect(loadConfig({ JENKINS_URL, REDIS_URL: 'rediss://:pw@r.example:6380' }).redis).toEqual({ mode: 'url', url: 'rediss://:pw@r.example:6380', caFile: undefined });
  });

  it('refuses malformed nodes, both modes at once, a sentinel set without a name, and WAIT in Cluster mode', () => {
    expect(() => loadConfig({ JENKINS_URL, REDIS_CLUSTER_NODES: 'no-port' })).toThrow(/REDIS_CLUSTER_NODES/);
    expect(() => loadConfig({ JENKINS_URL, REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINELS: 'b:2', REDIS_SENTINEL_NAME: 'x' })).toThrow(/not both/);
    expect(() => loadConfig({ JENKINS_URL, REDIS_SENTINELS: 'b:2' })).toThrow(/REDIS_SENTINEL_NAME: is required/);
    expect(() => loadConfig({ JENKINS_URL, REDIS_CLUSTER_NODES: 'a:1', REDIS_WAIT_REPLICAS: '1' })).toThrow(/REDIS_WAIT_REPLICAS/);
    expect(() => loadConfig({ JENKINS_URL, REDIS_WAIT_TIMEOUT_MS: '5000' })).toThrow(/REDIS_WAIT_TIMEOUT_MS/);
  });
});

describe('log keys share a hash tag per job and fall into LOG_GROUPS groups', () => {
  it("a job's log and progress keys carry the same {g<k>} tag, the one its wake stream carries", () => {
    const keys = createKeys('{ferry}');
    const groups = new Set<number>();
    for (let index = 0; index < 500; index += 1) {
      const id = `0194d0c2-0000-7000-8000-${String(index).padStart(12, '0')}`;
      const group = logGroup(id);
      groups.add(group);
      expect(logGroupOfKey(keys.log(id))).toBe(group);
      expect(logGroupOfKey(keys.progress(id))).toBe(group);
      expect(keys.log(id)).toBe(`ferry:log:{g${group}}:${id}`);
      expect(logGroupOfKey(logWakeKey(group))).toBe(group);
    }
    expect(groups.size).toBe(LOG_GROUPS);
  });
});
