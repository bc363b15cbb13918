// node profsum.mjs file.cpuprofile [perUnitDivisor] [topN]: self time by package and by function.
import process from 'node:process';
/* global console */
import { functionOf, packageOf, selfTimes } from './profile-lib.mjs';

const [file, div = '1', topArg = '40'] = process.argv.slice(2);
const byPkg = selfTimes(file, (callFrame) => packageOf(callFrame.url, callFrame.lineNumber));
const byFn = selfTimes(file, functionOf);
const total = [...byPkg.values()].reduce((sum, value) => sum + value, 0);
const d = Number(div), top = Number(topArg);
const show = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${(v / d).toFixed(1).padStart(9)}  ${k}`).join('\n');
console.log(`total ${(total / d).toFixed(1)} (us / ${d})\n--- by package\n${show(byPkg)}\n--- by function\n${show(byFn)}`);
