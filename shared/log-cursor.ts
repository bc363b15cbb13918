import { ValidationError } from './errors.js';

/**
 * Log cursors are Redis Stream entry ids of the form `0-<line number>`: ferry appends with `XADD
 * <key> 0-* ...`, so Redis numbers the lines 1, 2, 3... and a cursor tells how many lines came
 * before it even after older lines were trimmed. Clients treat cursors as opaque strings.
 */
const CURSOR_PATTERN = /^0-(\d{1,15})$/;

/** The cursor that precedes every line. */
export const START_CURSOR = '0-0';

/** Line number of a cursor; throws ValidationError for anything that is not a ferry cursor. */
export function cursorSequence(cursor: string): number {
  const match = CURSOR_PATTERN.exec(cursor);
  if (!match?.[1]) throw new ValidationError(`Invalid log cursor "${cursor.slice(0, 40)}"`);
  return Number(match[1]);
}

export function isCursor(value: string): boolean {
  return CURSOR_PATTERN.test(value);
}

/** Orders two cursors: negative when a comes first. */
export function compareCursors(a: string, b: string): number {
  return cursorSequence(a) - cursorSequence(b);
}
