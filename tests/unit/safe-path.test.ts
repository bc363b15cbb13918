import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveInside, UnsafePathError } from '../../worker/safe-path.js';

describe('resolveInside', () => {
  it('resolves nested relative paths under the root', () => {
    expect(resolveInside('/data', '6.4', 'routing', '55', 'hapy/a.xml')).toBe(path.resolve('/data/6.4/routing/55/hapy/a.xml'));
  });

  it.each([
    ['..', ['../etc/passwd']],
    ['nested ..', ['a/../../b']],
    ['absolute', ['/etc/passwd']],
    ['NUL', ['a\0b']],
    ['backslash', ['a\\..\\b']],
    ['empty component', ['a//b']],
    ['dot', ['.']],
  ])('refuses %s', (_name, segments) => {
    expect(() => resolveInside('/data', ...segments)).toThrow(UnsafePathError);
  });

  it('takes names that only begin with two dots', () => {
    expect(resolveInside('/data', '...', '..foo.xml')).toBe(path.resolve('/data/.../..foo.xml'));
    expect(resolveInside('/data', '6.4', 'm', '1', '..hidden/a.xml')).toBe(path.resolve('/data/6.4/m/1/..hidden/a.xml'));
  });
});
