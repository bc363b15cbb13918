// node profcallers.mjs <file.cpuprofile> <divisor> <leafRegex> [frameRegex] [top]: the time of the
// samples whose own frame matches leafRegex (by function label or package), summed by the nearest
// caller frame matching frameRegex (default: ferry's dist/ code) — "who makes these calls".
import process from 'node:process';
/* global console */
import { functionOf, loadProfile, packageOf } from './profile-lib.mjs';

const [file, div = '1', leaf = '', frame = 'dist/', top = '30'] = process.argv.slice(2);
const { profile, self } = loadProfile(file);
const leafRe = new RegExp(leaf);
const frameRe = new RegExp(frame);
const parent = new Map();
const byId = new Map();
for (const node of profile.nodes) {
  byId.set(node.id, node);
  for (const child of node.children ?? []) parent.set(child, node.id);
}
const sums = new Map();
for (const [id, time] of self) {
  const own = byId.get(id).callFrame;
  if (!leafRe.test(functionOf(own)) && !leafRe.test(packageOf(own.url, own.lineNumber))) continue;
  let key = '(no matching caller)';
  for (let cur = parent.get(id); cur !== undefined; cur = parent.get(cur)) {
    const label = functionOf(byId.get(cur).callFrame);
    if (frameRe.test(label)) {
      key = label;
      break;
    }
  }
  sums.set(key, (sums.get(key) ?? 0) + time);
}
const d = Number(div);
console.log([...sums].sort((a, b) => b[1] - a[1]).slice(0, Number(top)).map(([k, v]) => `${(v / d).toFixed(1).padStart(9)}  ${k}`).join('\n'));
