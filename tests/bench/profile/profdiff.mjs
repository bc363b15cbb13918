// node profdiff.mjs a.cpuprofile b.cpuprofile divisor [by=pkg|fn] [top]
import process from 'node:process';
/* global console */
import { readFileSync } from 'node:fs';
const [fa, fb, div = '1', by = 'pkg', top = '40'] = process.argv.slice(2);
const pkgOf = (url) => { if (!url) return '(native)'; const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url); if (m) return m[1]; if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0]; const d = /\/(dist\/[^/]+|tests\/[^/]+)/.exec(url); return d ? d[1] : url.slice(-40); };
const load = (f) => { const p = JSON.parse(readFileSync(f, 'utf8')); const dt = new Map(); for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0)); const m = new Map(); for (const n of p.nodes) { const t = dt.get(n.id) ?? 0; const cf = n.callFrame; const k = by === 'pkg' ? pkgOf(cf.url) : `${cf.functionName || '(anon)'} ${pkgOf(cf.url)}:${cf.lineNumber}`; m.set(k, (m.get(k) ?? 0) + t); } return m; };
const a = load(fa), b = load(fb), d = Number(div);
const keys = new Set([...a.keys(), ...b.keys()]);
const rows = [...keys].map((k) => [k, (a.get(k) ?? 0) / d, (b.get(k) ?? 0) / d]).filter(([k]) => k !== '(idle) (native):-1' && k !== '(idle)');
rows.sort((x, y) => Math.abs(y[2] - y[1]) - Math.abs(x[2] - x[1]));
let ta = 0, tb = 0; for (const [k, x, y] of rows) { if (!k.startsWith('(idle')) { ta += x; tb += y; } }
console.log(`total non-idle: a ${ta.toFixed(1)}  b ${tb.toFixed(1)}`);
for (const [k, x, y] of rows.slice(0, Number(top))) console.log(`${x.toFixed(1).padStart(8)} ${y.toFixed(1).padStart(8)} ${(y - x).toFixed(1).padStart(8)}  ${k}`);
