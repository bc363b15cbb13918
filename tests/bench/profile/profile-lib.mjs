// Shared by the profile helpers: reading a V8 .cpuprofile and naming where a sample was.
import { readFileSync } from 'node:fs';

/** The profile, and the sampled microseconds of each node id. */
export function loadProfile(file) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  return { profile, self };
}

/** The package (or node: module, dist/ folder) a script URL belongs to. */
export function packageOf(url) {
  if (!url) return '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const d = /\/(dist\/[^/]+|tests\/[^/]+)/.exec(url);
  return d ? d[1] : url.slice(-40);
}

/** A function's label: name, package and line. */
export const functionOf = (callFrame) => `${callFrame.functionName || '(anon)'} ${packageOf(callFrame.url)}:${callFrame.lineNumber}`;

/** Self time summed by `keyOf(callFrame)`. */
export function selfTimes(file, keyOf) {
  const { profile, self } = loadProfile(file);
  const sums = new Map();
  for (const node of profile.nodes) {
    const key = keyOf(node.callFrame);
    sums.set(key, (sums.get(key) ?? 0) + (self.get(node.id) ?? 0));
  }
  return sums;
}
