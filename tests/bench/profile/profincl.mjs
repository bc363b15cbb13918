// node profincl.mjs file.cpuprofile divisor filterRegex [topN]: inclusive time per function matching filter (url+name).
import process from 'node:process';
/* global console */
import { loadProfile } from './profile-lib.mjs';

const [file, div = '1', filt = 'dist/', topArg = '40'] = process.argv.slice(2);
const { profile: p, self: dt } = loadProfile(file);
const re = new RegExp(filt);
const parent = new Map(); const byId = new Map();
for (const n of p.nodes) { byId.set(n.id, n); for (const c of n.children ?? []) parent.set(c, n.id); }
const incl = new Map();
for (const [id, t] of dt) {
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const cf = byId.get(cur).callFrame;
    const key = `${cf.functionName || '(anon)'} ${cf.url.replace(/.*\/(dist|node_modules)\//, '$1/')}:${cf.lineNumber}`;
    if (!re.test(key) || seen.has(key)) continue;
    seen.add(key); incl.set(key, (incl.get(key) ?? 0) + t);
  }
}
const d = Number(div);
console.log([...incl].sort((a, b) => b[1] - a[1]).slice(0, Number(topArg)).map(([k, v]) => `${(v / d).toFixed(1).padStart(9)}  ${k}`).join('\n'));
