// node profsum.mjs file.cpuprofile [perUnitDivisor] [topN]: self time by package and by function.
import process from 'node:process';
/* global console */
import { readFileSync } from 'node:fs';
const [file, div = '1', topArg = '40'] = process.argv.slice(2);
const p = JSON.parse(readFileSync(file, 'utf8'));
const dt = new Map();
for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
const byPkg = new Map(), byFn = new Map();
const pkgOf = (url) => {
  if (!url) return '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const d = /\/(dist\/[^/]+|tests\/[^/]+)/.exec(url);
  return d ? d[1] : url.slice(-40);
};
let total = 0;
for (const n of p.nodes) {
  const t = dt.get(n.id) ?? 0; total += t;
  const cf = n.callFrame; const pkg = pkgOf(cf.url);
  byPkg.set(pkg, (byPkg.get(pkg) ?? 0) + t);
  const key = `${cf.functionName || '(anon)'} ${pkg}:${cf.lineNumber}`;
  byFn.set(key, (byFn.get(key) ?? 0) + t);
}
const d = Number(div), top = Number(topArg);
const show = (m) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${(v / d).toFixed(1).padStart(9)}  ${k}`).join('\n');
console.log(`total ${(total / d).toFixed(1)} (us / ${d})\n--- by package\n${show(byPkg)}\n--- by function\n${show(byFn)}`);
