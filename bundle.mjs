// Second step of `npm run build` (after tsc): bundles each process's entry point, with its
// dependencies, into one file in place of tsc's output: dist/api/main.js, dist/worker/main.js.
// Why: a cold start spent most of its time loading about 1,100 module files (some 4,000 stat calls)
// before main() ran; one file loads in a fraction of that (README "Cold start"). The other files of
// dist/ stay as tsc wrote them (tests and tools import them). Bundled from the TypeScript sources,
// so a bundle is never staler than the sources whatever tsc's incremental build skipped.
// Left out of the bundles, loaded from node_modules at run time:
// - @bull-board/*: loaded on the first dashboard request, and serves its UI's files from its package;
// - msgpackr-extract: msgpackr's optional native addon (found by file path, not bundlable).
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { pathToFileURL, URL } from 'node:url';
import { build } from 'esbuild';

/**
 * ioredis reads its version from `<its folder>/../../package.json` (for CLIENT SETINFO LIB-VER);
 * inside a bundle there is no such folder, so it would report 'error-fetching-version'. The bundled
 * copy's version is known now: written in. Fails the build if ioredis changes that code.
 */
const ioredisVersion = {
  name: 'ioredis-version',
  setup(bundler) {
    bundler.onLoad({ filter: /[\\/]ioredis[\\/]built[\\/]utils[\\/]index\.js$/ }, async (args) => {
      const { version } = JSON.parse(await readFile(new URL('node_modules/ioredis/package.json', import.meta.url), 'utf8'));
      const source = await readFile(args.path, 'utf8');
      const read = 'await fs_1.promises.readFile(filePath, "utf8")';
      if (!source.includes(read)) throw new Error('bundle.mjs: ioredis no longer reads its package.json as expected; update the ioredis-version plugin');
      return { contents: source.replace(read, JSON.stringify(JSON.stringify({ version }))), loader: 'js' };
    });
  },
};

/**
 * esbuild's options for ferry's process bundles (also used by tests/bench/profile/worker-variant.mjs,
 * which bundles the worker with plugins of its own).
 */
export const bundleOptions = (plugins = []) => ({
  entryPoints: ['api/main.ts', 'worker/main.ts'],
  outdir: 'dist',
  outbase: '.',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  external: ['@bull-board/*', 'msgpackr-extract'],
  plugins: [ioredisVersion, ...plugins],
  // CommonJS dependencies call require() for Node's modules; an ES module has none of its own.
  banner: { js: "import { createRequire as __ferryCreateRequire } from 'node:module'; const require = __ferryCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await build(bundleOptions());
