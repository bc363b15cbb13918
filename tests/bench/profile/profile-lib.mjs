// Shared by the profile helpers: reading a V8 .cpuprofile and naming where a sample was.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The profile, and the sampled microseconds of each node id. */
export function loadProfile(file) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const self = new Map();
  for (let i = 0; i < profile.samples.length; i++) self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  return { profile, self };
}

/** Per bundle file: the line numbers where esbuild's `// <source path>` comments start a module, and those paths. */
const bundles = new Map();

/** The source file (e.g. `node_modules/ioredis/built/Pipeline.js`, `worker/job-journal.ts`) a line of an esbuild bundle came from. */
function bundleSourceOf(url, line) {
  let index = bundles.get(url);
  if (!index) {
    index = { lines: [], paths: [] };
    try {
      readFileSync(fileURLToPath(url), 'utf8').split('\n').forEach((text, n) => {
        const m = /^\/\/ ((?:node_modules|api|worker|shared|cli|runner)\/\S+)$/.exec(text);
        if (m) {
          index.lines.push(n);
          index.paths.push(m[1]);
        }
      });
    } catch {
      // not a file URL, or gone: no source names
    }
    bundles.set(url, index);
  }
  let lo = 0, hi = index.lines.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (index.lines[mid] <= line) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found < 0 ? undefined : index.paths[found];
}

/** The package (or node: module, dist/ folder) a script URL belongs to; inside a bundle (dist/<x>/main.js), the bundled package or ferry source file the line came from. */
export function packageOf(url, line) {
  if (!url) return '(native)';
  if (line !== undefined && /\/dist\/[^/]+\/main\.js$/.test(url)) {
    const source = bundleSourceOf(url, line);
    // A bundled package is named below, as an unbundled one is; a ferry source file by its path.
    if (source && !source.startsWith('node_modules/')) return source;
    if (source) url = source;
  }
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const d = /\/(dist\/[^/]+|tests\/[^/]+)/.exec(url);
  return d ? d[1] : url.slice(-40);
}

/** A function's label: name, package and line. */
export const functionOf = (callFrame) => `${callFrame.functionName || '(anon)'} ${packageOf(callFrame.url, callFrame.lineNumber)}:${callFrame.lineNumber}`;

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
