import { Redis } from 'ioredis';
import { startFakeJenkins, type FakeJenkins } from '../helpers/fake-jenkins.js';
import { startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { createReport, describeMachine, type Report } from './harness.js';

export interface Scenario {
  /** The scenario's own redis-server on a free loopback port. */
  readonly redisServer: RedisServer;
  /** A client of it, for the bench's own reads. */
  readonly redis: Redis;
  readonly jenkins: FakeJenkins;
  /** Its report, headed with the machine (cores, Node and Redis versions, load). */
  readonly report: Report;
  /** Stops what start made, last first (the caller saves the report after its own cleanup). */
  stop(): Promise<void>;
}

/** What every bench scenario starts with: its own Redis, the fake Jenkins, and its report. */
export async function startScenario(name: string, title: string): Promise<Scenario> {
  const redisServer = await startRedisServer();
  const redis = new Redis(redisServer.url);
  const jenkins = await startFakeJenkins();
  const report = createReport(name, title, await describeMachine(redis));
  return {
    redisServer,
    redis,
    jenkins,
    report,
    async stop() {
      redis.disconnect();
      await jenkins.close();
      await redisServer.stop();
    },
  };
}
