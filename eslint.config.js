// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Folders that must not import each other: shared/ imports neither side; api/ and worker/ stay apart; cli/ imports only shared/. */
const boundary = (patterns, message) => ({
  'no-restricted-imports': ['error', { patterns: [{ group: patterns, message }] }],
});

export default tseslint.config(
  { ignores: ['dist/**', '.cmp/**', 'node_modules/**', 'downloads/**', 'data/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      'no-console': 'error',
    },
  },
  { files: ['shared/**/*.ts'], rules: boundary(['**/api/**', '**/worker/**', '**/runner/**'], 'shared/ is imported by api/ and worker/, never the other way round') },
  { files: ['api/**/*.ts'], rules: boundary(['**/worker/**', '**/runner/**'], 'api/ must not import worker/ code: move shared code to shared/') },
  { files: ['worker/**/*.ts'], rules: boundary(['**/api/**', '**/runner/**'], 'worker/ must not import api/ code: move shared code to shared/') },
  { files: ['cli/**/*.ts'], rules: boundary(['**/api/**', '**/worker/**', '**/runner/**'], 'cli/ talks to the API over HTTP: it may import shared/, never api/, worker/ or runner/ code') },
  { files: ['tests/**/*.ts', '*.config.ts'], rules: { 'no-console': 'off' } },
);
