// Preloaded into ferry's processes with `NODE_OPTIONS=--import=...` when BENCH_CPU_PROF=<dir> is set
// (Node 20 refuses --cpu-prof in NODE_OPTIONS): samples the process's CPU with V8's profiler from
// start to exit and writes <dir>/<script>-<pid>.cpuprofile, readable in Chrome DevTools.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
import process from 'node:process';

const dir = process.env.BENCH_CPU_PROF;
if (dir) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.start');
  // An in-process inspector session answers synchronously, so this works inside 'exit'.
  process.on('exit', () => {
    session.post('Profiler.stop', (error, result) => {
      if (error) return;
      const name = `${path.basename(path.dirname(process.argv[1] ?? 'node'))}-${process.pid}.cpuprofile`;
      writeFileSync(path.join(dir, name), JSON.stringify(result.profile));
    });
  });
}
