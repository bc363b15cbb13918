/**
 * Scenario 3, live-log fan-out: 10 running jobs each publishing 20 lines per second (XADD through
 * ferry's shared/job-log.js, from a separate process holding the jobs as a BullMQ worker), followed
 * by N SSE clients spread evenly over the jobs, all on one API process. Phases of 10, 1,000 and
 * 10,000 clients (quick: 10 and 200), each with new jobs. Per phase: every client must get every
 * line once and in order, then the end; the delay from publish to receive; the API process's Redis
 * connections (its TCP sockets to Redis, named through CLIENT LIST); its RSS and CPU.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { it } from 'vitest';
import { startScenario } from './scenario.js';
import { ferryEnv, startFerryApi, submitDownload } from './ferry-fleet.js';
import {
  clientNamesByPort,
  connectionsNamed,
  percentile,
  processCpuSeconds,
  processMemory,
  QUICK,
  sampleRss,
  sleep,
  startNode,
  tcpConnectionsTo,
} from './harness.js';
import { follow, type FollowerStats } from './sse-followers.js';

const JOBS = 10;
const LINES_PER_SECOND = 20;
const SECONDS = QUICK ? 3 : 10;
const LINES = LINES_PER_SECOND * SECONDS;
/** BENCH_FAN_OUT_PHASES=10,1000 runs only those client counts (to profile one, with BENCH_CPU_PROF). */
const PHASES = process.env.BENCH_FAN_OUT_PHASES
  ? process.env.BENCH_FAN_OUT_PHASES.split(',').map(Number)
  : QUICK
    ? [10, 200]
    : [10, 1_000, 10_000];
/** The phase the issue sets its goals for (1,000 clients; 200 in quick mode). */
const GOAL_PHASE = QUICK ? 200 : 1_000;

interface Phase {
  readonly clients: number;
  readonly stats: FollowerStats;
  readonly finished: boolean;
  readonly connections: number;
  readonly connectionNames: string[];
  readonly connectionsByName: number;
  readonly rssMaxMB: number;
  readonly peakMB: number;
  readonly cpuPercent: number;
  readonly benchLoopDelayP99Ms: number;
  readonly publisherLate: number;
  readonly connectSeconds: number;
}

it('live-log fan-out: 10 jobs x 20 lines/s to a growing number of SSE clients on one API process', async () => {
  const { redisServer, redis, jenkins, report, stop } = await startScenario(
    'log-fan-out',
    `3. Live-log fan-out: ${JOBS} running jobs x ${LINES_PER_SECOND} lines/s for ${SECONDS} s, ${PHASES.map((n) => n.toLocaleString('en-US')).join(' / ')} SSE clients on one API process`,
  );
  const api = await startFerryApi(ferryEnv(redisServer.url, jenkins.url, '/tmp/ferry-bench-unused'));
  const apiPid = api.service.child.pid as number;
  let build = 0;

  const runPhase = async (clients: number): Promise<Phase> => {
    const jobIds: string[] = [];
    for (let job = 0; job < JOBS; job += 1) {
      jobIds.push(await submitDownload(api.url, `${jenkins.url}job/QA_Release_6.4/job/fan-out/${(build += 1)}/`));
    }
    const connectStarted = Date.now();
    const followers = follow(api.url, jobIds, clients / JOBS, LINES);
    await followers.ready;
    const connectSeconds = (Date.now() - connectStarted) / 1000;
    // Each stream subscribes to the shared tail after its replay: let the last ones get there.
    await sleep(500);

    const rss = sampleRss(apiPid);
    const cpuBefore = processCpuSeconds(apiPid);
    const started = Date.now();
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const publisher = startNode('tests/bench/baselines/log-publisher.mjs', [], {
      REDIS_URL: redisServer.url,
      QUEUE_PREFIX: '{ferry}',
      JOB_IDS: jobIds.join(','),
      LINES: String(LINES),
      INTERVAL_MS: String(1000 / LINES_PER_SECOND),
    });
    // Halfway through the publishing, with every client following: count the API's connections.
    await sleep((SECONDS * 1000) / 2);
    const ports = await tcpConnectionsTo(apiPid, redisServer.port);
    const connectionNames = await clientNamesByPort(redis, ports);
    const connectionsByName = await connectionsNamed(redis, ['ferry:api', 'ferry:api-queue', 'ferry:api-log-tail']);
    const code = await Promise.race([publisher.exited, sleep(SECONDS * 1000 + 60_000).then(() => 'timeout' as const)]);
    if (code !== 0) throw new Error(`log publisher ended with ${String(code)}: ${publisher.output()}`);
    const finished = await followers.finished(60_000);
    const cpuPercent = ((processCpuSeconds(apiPid) - cpuBefore) / ((Date.now() - started) / 1000)) * 100;
    loop.disable();
    const rssMaxMB = rss.stop();
    const stats = followers.stats();
    followers.close();
    const publisherLate = (JSON.parse(publisher.output().trim().split('\n').at(-1) ?? '{}') as { late?: number }).late ?? -1;
    return {
      clients,
      stats,
      finished,
      connections: ports.length,
      connectionNames,
      connectionsByName,
      rssMaxMB,
      peakMB: processMemory(apiPid).peakMB,
      cpuPercent,
      // The histogram counts the 10 ms sampling interval itself; what is above it is lag.
      benchLoopDelayP99Ms: Math.max(0, loop.percentile(99) / 1e6 - 10),
      publisherLate,
      connectSeconds,
    };
  };

  try {
    const phases: Phase[] = [];
    for (const clients of PHASES) {
      const phase = await runPhase(clients);
      phases.push(phase);
      const { stats } = phase;
      report.log(
        `${clients} clients: connected in ${phase.connectSeconds.toFixed(1)} s; ${stats.connected} answered 200, ${stats.perfect} perfect, ` +
          `${stats.ended} ended, ${stats.missing} lines missing, ${stats.repeatedOrOutOfOrder} repeated/out of order, ${stats.cutOff} cut off; ` +
          `delay p50 ${percentile(stats.delays, 50)?.toFixed(1)} ms p99 ${percentile(stats.delays, 99)?.toFixed(1)} ms max ${percentile(stats.delays, 100)?.toFixed(1)} ms; ` +
          `API Redis connections ${phase.connections} [${phase.connectionNames.join(', ')}], RSS max ${phase.rssMaxMB.toFixed(0)} MB, ` +
          `CPU ${phase.cpuPercent.toFixed(0)} %; bench event-loop delay p99 ${phase.benchLoopDelayP99Ms.toFixed(1)} ms; publisher late ${phase.publisherLate}`,
      );
    }
    const first = phases[0] as Phase;
    for (const phase of phases) {
      const n = phase.clients.toLocaleString('en-US');
      const hasGoal = phase.clients <= GOAL_PHASE;
      const isBaseline = phase === first;
      const baseline = (value: number | null) => (isBaseline ? {} : { baseline: value });
      report.figure(`clients with every line once, in order (${n})`, 'clients', phase.stats.perfect, {
        goal: { text: `= ${n} clients`, pass: phase.stats.perfect === phase.clients },
        ...(phase.stats.perfect === phase.clients ? {} : { note: `${phase.stats.missing} lines missing, ${phase.stats.repeatedOrOutOfOrder} repeated, ${phase.stats.cutOff} cut off` }),
      });
      const p50 = percentile(phase.stats.delays, 50);
      const p99 = percentile(phase.stats.delays, 99);
      report.figure(`publish->receive delay p50 (${n} clients)`, 'ms', p50, baseline(percentile(first.stats.delays, 50)));
      report.figure(`publish->receive delay p99 (${n} clients)`, 'ms', p99, {
        ...baseline(percentile(first.stats.delays, 99)),
        ...(hasGoal ? { goal: { below: 100 } } : {}),
      });
      report.figure(`API Redis connections (${n} clients)`, 'conns', phase.connections, {
        ...baseline(first.connections),
        ...(hasGoal ? { goal: { text: '<= 4, same as 10', pass: phase.connections <= 4 && phase.connections === first.connections } } : {}),
        note: phase.connectionNames.join(', '),
      });
      report.figure(`API peak RSS (${n} clients)`, 'MB', phase.peakMB, {
        ...baseline(first.peakMB),
        ...(hasGoal ? { goal: { below: 250 } } : {}),
      });
      report.figure(`API CPU while publishing (${n} clients)`, '%', phase.cpuPercent, baseline(first.cpuPercent));
    }
    report.note(
      'delay = client receive time minus the wall clock the publisher put in the line just before its XADD; the clients share ' +
        'the machine with the API (their own event-loop delay is printed per phase), so in the largest phase part of the delay is theirs',
    );
    report.note(`peak RSS is the API process's VmHWM after the phase (phases run in increasing size, so it is that phase's peak)`);
    if (phases.some((phase) => phase.connectionsByName !== phase.connections)) {
      report.note(`connections named ferry:api/ferry:api-queue/ferry:api-log-tail: ${phases.map((phase) => phase.connectionsByName).join(' / ')}`);
    }
  } finally {
    await api.service.stop();
    await stop();
    await report.save();
  }
});
