// node profdiff.mjs a.cpuprofile b.cpuprofile divisor [by=pkg|fn] [top]
import process from 'node:process';
/* global console */
import { functionOf, packageOf, selfTimes } from './profile-lib.mjs';

const [fa, fb, div = '1', by = 'pkg', top = '40'] = process.argv.slice(2);
const load = (file) => selfTimes(file, by === 'pkg' ? (callFrame) => packageOf(callFrame.url, callFrame.lineNumber) : functionOf);
const a = load(fa), b = load(fb), d = Number(div);
const keys = new Set([...a.keys(), ...b.keys()]);
const rows = [...keys].map((k) => [k, (a.get(k) ?? 0) / d, (b.get(k) ?? 0) / d]).filter(([k]) => k !== '(idle) (native):-1' && k !== '(idle)');
rows.sort((x, y) => Math.abs(y[2] - y[1]) - Math.abs(x[2] - x[1]));
let ta = 0, tb = 0; for (const [k, x, y] of rows) { if (!k.startsWith('(idle')) { ta += x; tb += y; } }
console.log(`total non-idle: a ${ta.toFixed(1)}  b ${tb.toFixed(1)}`);
for (const [k, x, y] of rows.slice(0, Number(top))) console.log(`${x.toFixed(1).padStart(8)} ${y.toFixed(1).padStart(8)} ${(y - x).toFixed(1).padStart(8)}  ${k}`);
