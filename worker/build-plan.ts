import { UnrecoverableError } from 'bullmq';
import picomatch from 'picomatch';
import { z } from 'zod';
import { PART_SUFFIX } from './download-file.js';
import type { JenkinsClient } from './jenkins-client.js';
import { MANIFEST_NAME } from './manifest.js';
import { artifactUrl, isSafeRelativePath, moduleBuildUrl, moduleName, parseBuildUrl } from '../shared/jenkins-url.js';
import { resolveInside } from './safe-path.js';

/** The part of Jenkins' build JSON ferry uses. */
const BuildInfoSchema = z.object({
  number: z.number().int().nonnegative(),
  result: z.string().nullable().optional(),
  artifacts: z.array(z.object({ fileName: z.string(), relativePath: z.string() })).default([]),
  // Checked on its own (FingerprintSchema): a list ferry cannot read means no MD5s, not a failed job.
  fingerprint: z.unknown().optional(),
});
type BuildInfo = z.infer<typeof BuildInfoSchema>;

const BuildMapSchema = z.record(
  z.string().min(1),
  z.union([z.number().int().nonnegative(), z.string().regex(/^\d+$/).transform(Number)]),
);

const FingerprintSchema = z.object({
  fingerprint: z.array(z.object({ fileName: z.string(), hash: z.string().regex(/^[0-9a-fA-F]{32}$/) })).default([]),
});

/**
 * MD5s by base name from the build's `fingerprint[fileName,hash]` (asked for in the same `tree=` as
 * the artifacts: one request per build, not two), keeping only names that appear once among the
 * fingerprints and once among the artifacts (Jenkins keys fingerprints by base name). A build
 * without fingerprints, or a list that is not what Jenkins sends, gives none.
 */
function fingerprintsOf(info: BuildInfo): Map<string, string> {
  const parsed = FingerprintSchema.safeParse({ fingerprint: info.fingerprint });
  if (!parsed.success) return new Map();
  const count = (names: string[]) => names.reduce((map, name) => map.set(name, (map.get(name) ?? 0) + 1), new Map<string, number>());
  const fingerprintCounts = count(parsed.data.fingerprint.map((entry) => entry.fileName));
  const artifactCounts = count(info.artifacts.map((artifact) => artifact.relativePath.split('/').at(-1) ?? ''));
  const result = new Map<string, string>();
  for (const { fileName, hash } of parsed.data.fingerprint) {
    if (fingerprintCounts.get(fileName) === 1 && artifactCounts.get(fileName) === 1) result.set(fileName, hash.toLowerCase());
  }
  return result;
}

const BUILD_TREE = 'tree=number,result,displayName,artifacts[fileName,relativePath],fingerprint[fileName,hash]';

export interface PlannedFile {
  readonly relativePath: string;
  /** MD5 from Jenkins' fingerprints when its base name is unambiguous. */
  readonly expectedMd5: string | undefined;
  readonly url: string;
  /** Absolute target path, proven to be inside the module folder. */
  readonly target: string;
}

export interface PlannedModule {
  readonly name: string;
  readonly build: number;
  readonly buildUrl: string;
  /** Absolute `<DOWNLOAD_DIR>/<release>/<module>/<build>`. */
  readonly dir: string;
  /** `<release>/<module>/<build>`, relative to DOWNLOAD_DIR. */
  readonly relativeDir: string;
  readonly files: readonly PlannedFile[];
}

export interface PlanRequest {
  readonly jobUrl: string;
  readonly release: string;
  readonly include: readonly string[];
  readonly downloadDir: string;
  readonly signal: AbortSignal;
  readonly log: (message: string) => Promise<unknown>;
  /**
   * A batch's module job: `jobUrl` is the module's own build, downloaded as this one module under
   * this name, without following a build_map.json again.
   */
  readonly moduleName?: string | undefined;
}

/** One module build named by a build (its build_map.json, or the build itself). */
export interface ModuleRef {
  readonly name: string;
  readonly buildUrl: string;
}

async function getBuildInfo(jenkins: JenkinsClient, buildUrl: string, signal: AbortSignal): Promise<BuildInfo> {
  const raw = await jenkins.getJson(`${buildUrl}api/json?${BUILD_TREE}`, signal);
  const parsed = BuildInfoSchema.safeParse(raw);
  if (!parsed.success) throw new UnrecoverableError(`Unexpected build JSON from ${buildUrl}api/json`);
  return parsed.data;
}

/**
 * Works out every module and every file of a job before anything is written: the build_map.json
 * fan-out (or the build alone as one module), the include globs, and the target paths, each proven
 * to stay inside DOWNLOAD_DIR. A path that would leave it fails the job with nothing written.
 */
/** The build's modules: one per build_map.json entry, or the build itself; `info` is the build's. */
async function resolveModules(
  jenkins: JenkinsClient,
  jobUrl: string,
  signal: AbortSignal,
  log: (message: string) => Promise<unknown>,
): Promise<{ info: BuildInfo; modules: ModuleRef[]; mapped: boolean }> {
  const location = parseBuildUrl(jobUrl);
  if (!location) throw new UnrecoverableError(`Not a Jenkins build URL: ${jobUrl}`);
  const info = await getBuildInfo(jenkins, location.buildUrl, signal);
  const buildMap = info.artifacts.find((artifact) => artifact.relativePath === 'build_map.json')
    ?? info.artifacts.find((artifact) => artifact.fileName === 'build_map.json');
  if (!buildMap) {
    const buildUrl = `${location.folderUrl}job/${encodeURIComponent(location.jobName)}/${info.number}/`;
    return { info, modules: [{ name: moduleName(location.jobName), buildUrl }], mapped: false };
  }
  if (!isSafeRelativePath(buildMap.relativePath)) {
    throw new UnrecoverableError(`build_map.json of ${location.buildUrl} is listed at an unsafe path: ${JSON.stringify(buildMap.relativePath)}`);
  }
  const raw = await jenkins.getJson(artifactUrl(location.buildUrl, buildMap.relativePath), signal);
  const parsed = BuildMapSchema.safeParse(raw);
  if (!parsed.success) throw new UnrecoverableError(`build_map.json of ${location.buildUrl} is not a map of job keys to build numbers`);
  const entries = Object.entries(parsed.data);
  await log(`build_map.json lists ${entries.length} module build(s)`);
  return { info, modules: entries.map(([key, build]) => ({ name: moduleName(key), buildUrl: moduleBuildUrl(location.folderUrl, key, build) })), mapped: true };
}

/** A batch's view of one build: its modules, without listing their artifacts (each child does). */
export async function listModules(
  jenkins: JenkinsClient,
  jobUrl: string,
  signal: AbortSignal,
  log: (message: string) => Promise<unknown>,
): Promise<ModuleRef[]> {
  return (await resolveModules(jenkins, jobUrl, signal, log)).modules;
}

/** Compiled include globs by list: most jobs use ARTIFACT_INCLUDE, so each list is compiled once. */
const matchers = new Map<string, (path: string) => boolean>();
const MAX_MATCHERS = 64;

function includeMatcher(include: readonly string[]): (path: string) => boolean {
  if (include.length === 0) return () => true;
  const key = JSON.stringify(include);
  let matcher = matchers.get(key);
  if (!matcher) {
    if (matchers.size >= MAX_MATCHERS) matchers.clear();
    matcher = picomatch([...include], { dot: true });
    matchers.set(key, matcher);
  }
  return matcher;
}

export async function planBuild(jenkins: JenkinsClient, request: PlanRequest): Promise<PlannedModule[]> {
  const sources: Array<{ name: string; buildUrl: string; info: BuildInfo }> = [];
  if (request.moduleName !== undefined) {
    const location = parseBuildUrl(request.jobUrl);
    if (!location) throw new UnrecoverableError(`Not a Jenkins build URL: ${request.jobUrl}`);
    sources.push({ name: request.moduleName, buildUrl: location.buildUrl, info: await getBuildInfo(jenkins, location.buildUrl, request.signal) });
  } else {
    const resolved = await resolveModules(jenkins, request.jobUrl, request.signal, request.log);
    for (const module of resolved.modules) {
      const info = resolved.mapped ? await getBuildInfo(jenkins, module.buildUrl, request.signal) : resolved.info;
      sources.push({ ...module, info });
    }
  }

  const matches = includeMatcher(request.include);
  const fingerprints = sources.map((source) => fingerprintsOf(source.info));
  return sources.map(({ name, buildUrl, info: moduleInfo }, moduleIndex) => {
    const relativeDir = [request.release, name, String(moduleInfo.number)];
    const dir = resolveInside(request.downloadDir, ...relativeDir);
    // Every listed path is checked, not only the included ones: a hostile name fails the job
    // loudly instead of being skipped by the globs unnoticed.
    const files = moduleInfo.artifacts
      .map((artifact) => {
        const target = resolveInside(dir, artifact.relativePath);
        if (artifact.relativePath.endsWith(PART_SUFFIX) || artifact.relativePath === MANIFEST_NAME) {
          throw new UnrecoverableError(`Artifact name is reserved by ferry: ${artifact.relativePath}`);
        }
        return {
          relativePath: artifact.relativePath,
          url: artifactUrl(buildUrl, artifact.relativePath),
          target,
          expectedMd5: fingerprints[moduleIndex]?.get(artifact.fileName),
        };
      })
      .filter((file) => matches(file.relativePath));
    return { name, build: moduleInfo.number, buildUrl, dir, relativeDir: relativeDir.join('/'), files };
  });
}
