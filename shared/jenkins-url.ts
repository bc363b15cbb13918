/**
 * Jenkins naming rules for the build_map.json fan-out, kept exactly as the tracker has them so
 * ferry's folders match the ones it already has (see JENKINS.md, "What one download does").
 */

const MODULE_SUFFIXES = ['_esxi', '_module_esxi', '_module'] as const;

/**
 * Module folder name from a build_map key or a job name: lower-cased, `-` turned into `_`, then the
 * first matching suffix of `_esxi`, `_module_esxi`, `_module` removed (in that order, so
 * `_module_esxi` never applies: EDGE_MODULE_ESXI → edge_module).
 */
export function moduleName(keyOrJobName: string): string {
  const base = keyOrJobName.toLowerCase().replaceAll('-', '_');
  for (const suffix of MODULE_SUFFIXES) {
    if (base.endsWith(suffix) && base.length > suffix.length) return base.slice(0, -suffix.length);
  }
  return base;
}

export interface BuildLocation {
  /** The folder holding the job, with a trailing slash: `https://j/job/QA_Release_6.4/`. */
  readonly folderUrl: string;
  /** The job's name, decoded: `main-regression`. */
  readonly jobName: string;
  /** The build: a number or a permalink such as `lastSuccessfulBuild`. */
  readonly build: string;
  /** The build URL, normalised with a trailing slash. */
  readonly buildUrl: string;
}

const BUILD_PATH = /^(.*\/)job\/([^/]+)\/([^/]+)\/?$/;

/** Splits a Jenkins build URL into folder, job name and build; null when it is not one. */
export function parseBuildUrl(jobUrl: string): BuildLocation | null {
  const url = new URL(jobUrl);
  const match = BUILD_PATH.exec(url.pathname);
  if (!match?.[1] || !match[2] || !match[3]) return null;
  const folderUrl = new URL(match[1], url.origin).toString();
  let jobName: string;
  try {
    jobName = decodeURIComponent(match[2]);
  } catch {
    return null;
  }
  return {
    folderUrl,
    jobName,
    build: match[3],
    buildUrl: new URL(`${match[1]}job/${match[2]}/${match[3]}/`, url.origin).toString(),
  };
}

/** A module build beside the parent job: `<folder>/job/<KEY with _ turned into ->/<build>/`. */
export function moduleBuildUrl(folderUrl: string, key: string, build: number): string {
  return new URL(`job/${encodeURIComponent(key.replaceAll('_', '-'))}/${build}/`, folderUrl).toString();
}

/** Artifact download URL, each path segment URL-encoded. */
/**
 * True for an artifact path Jenkins could have listed: relative, '/'-separated components, none
 * empty, '.' or '..', no backslash or NUL. encodeURIComponent leaves '..' as it is, so a path with
 * one would climb out of the build (and JENKINS_URL's path) while carrying the credentials.
 */
export function isSafeRelativePath(relativePath: string): boolean {
  if (relativePath.includes('\\') || relativePath.includes('\0')) return false;
  return relativePath.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

export function artifactUrl(buildUrl: string, relativePath: string): string {
  if (!isSafeRelativePath(relativePath)) throw new Error(`not a safe artifact path: ${JSON.stringify(relativePath)}`);
  const encoded = relativePath.split('/').map(encodeURIComponent).join('/');
  return new URL(`artifact/${encoded}`, buildUrl).toString();
}

const RELEASE_IN_PATH = /\/QA_Release_([0-9.]+)\//;

/** The `x.y` of a `/QA_Release_<x.y>/` path segment, as the tracker derives it; undefined if none. */
export function releaseFromJobUrl(jobUrl: string): string | undefined {
  return RELEASE_IN_PATH.exec(new URL(jobUrl).pathname)?.[1];
}

/** True when `url` is on the origin of `baseUrl` and under its path. */
export function isUnderBase(url: URL, baseUrl: string): boolean {
  const base = new URL(baseUrl);
  return url.origin === base.origin && url.pathname.startsWith(base.pathname);
}
