// node tests/bench/profile/cpu-per-req.mjs <api main.js> [N]: CPU µs per submit (STATUS=1: per status read) of an API process
import process from 'node:process';
/* global console, setTimeout, fetch, URL */
// (ferry's dist/api/main.js, or tests/bench/baselines/bare-api.mjs) and of its own redis-server,
// under N autocannon submits (CONNS connections, default 50), read from /proc. Loopback only.
// Compare two builds by copying each dist/ aside (e.g. .cmp/old/dist, with api/web copied in).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createRequire } from 'node:module';
const require = createRequire(new URL('../../../package.json', import.meta.url));
const autocannon = require('autocannon');
const [main, nArg = '20000'] = process.argv.slice(2);
const N = Number(nArg);
const freePort = () => new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
const cpu = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * 10_000; }; // µs (HZ=100)
const rport = await freePort();
const redis = spawn('redis-server', ['--port', String(rport), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 300));
const port = await freePort();
const api = spawn(process.execPath, [main], { env: { ...process.env, NODE_ENV: 'production', REDIS_URL: `redis://127.0.0.1:${rport}`, JENKINS_URL: 'http://127.0.0.1:9/', DOWNLOAD_DIR: '/tmp/ferry-cpu-per-req', HOST: '127.0.0.1', PORT: String(port), RATE_LIMIT_PER_MINUTE: '100000000', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'] });
for (let t = 0; t < 100; t++) { try { if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) break; } catch { /* not up yet */ } await new Promise((r) => setTimeout(r, 100)); }
let b = 0;
const load = (amount) => autocannon({ url: `http://127.0.0.1:${port}`, connections: Number(process.env.CONNS ?? 50), pipelining: 1, amount, ...(process.env.RATE ? { overallRate: Number(process.env.RATE) } : {}), method: 'POST', headers: { 'content-type': 'application/json' },
  requests: [{ setupRequest: (req) => ({ ...req, path: '/api/v1/jenkins/download', body: JSON.stringify({ job_url: `http://127.0.0.1:9/job/QA_Release_6.4/job/main-regression/${(b += 1)}/` }) }) }] });
await load(3000);
// STATUS=1: GET .../status of one job (submitted just now) instead of submits.
let measured = load;
if (process.env.STATUS === '1') {
  const submitted = await fetch(`http://127.0.0.1:${port}/api/v1/jenkins/download`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ job_url: 'http://127.0.0.1:9/job/QA_Release_6.4/job/main-regression/999999/' }) });
  const { status_url: statusUrl } = await submitted.json();
  measured = (amount) => autocannon({ url: `http://127.0.0.1:${port}${statusUrl}`, connections: Number(process.env.CONNS ?? 50), pipelining: 1, amount, ...(process.env.RATE ? { overallRate: Number(process.env.RATE) } : {}) });
  await measured(3000);
}
const c0 = cpu(api.pid); const rc0 = cpu(redis.pid);
const res = await measured(N);
const c1 = cpu(api.pid); const rc1 = cpu(redis.pid);
console.log(`${main}: ${res['2xx']} ok, ${res.non2xx} non2xx, ${Math.round(res.requests.average)} req/s; API CPU ${((c1 - c0) / N).toFixed(0)} µs/req; Redis CPU ${((rc1 - rc0) / N).toFixed(0)} µs/req`);
api.kill('SIGTERM'); redis.kill('SIGTERM');
