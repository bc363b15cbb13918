import path from 'node:path';
import { AppError } from '../shared/errors.js';

/** A path from Jenkins or the request would leave its folder. */
export class UnsafePathError extends AppError {
  constructor(message: string) {
    super('UNSAFE_PATH', message);
  }
}

/**
 * Resolves `segments` under `root` and proves the result stays inside it: no `..` escape, no
 * absolute segment, no NUL byte, no empty or dot-only component. Returns the absolute path.
 */
export function resolveInside(root: string, ...segments: string[]): string {
  const absoluteRoot = path.resolve(root);
  for (const segment of segments) {
    if (segment.includes('\0')) throw new UnsafePathError(`path contains a NUL byte: ${JSON.stringify(segment)}`);
    if (segment.includes('\\')) throw new UnsafePathError(`path contains a backslash: ${JSON.stringify(segment)}`);
    if (path.isAbsolute(segment)) throw new UnsafePathError(`path is absolute: ${JSON.stringify(segment)}`);
    for (const part of segment.split('/')) {
      if (part === '' || part === '.' || part === '..') {
        throw new UnsafePathError(`path has an empty, "." or ".." component: ${JSON.stringify(segment)}`);
      }
    }
  }
  const resolved = path.resolve(absoluteRoot, ...segments);
  const relative = path.relative(absoluteRoot, resolved);
  // '..' itself or a first component '..' leaves the root; '...' or '..foo.xml' is a name like any other.
  if (relative === '' || relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
    throw new UnsafePathError(`path leaves ${absoluteRoot}: ${JSON.stringify(segments.join('/'))}`);
  }
  return resolved;
}
