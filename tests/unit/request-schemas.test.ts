import { describe, expect, it } from 'vitest';
import { validateSubmission } from '../../api/request-schemas.js';
import { ValidationError } from '../../shared/errors.js';

const JENKINS = 'https://jenkins.example/';
const BUILD = 'https://jenkins.example/job/QA_Release_6.4/job/main-regression/216/';

describe('validateSubmission', () => {
  it('derives the release and applies defaults', () => {
    expect(validateSubmission({ job_url: BUILD }, JENKINS)).toEqual({ job_url: BUILD, release: '6.4', skip_existing: true, artifacts: [] });
  });

  it('keeps an explicit release and globs', () => {
    expect(validateSubmission({ job_url: BUILD, release: 'r-1_x.y', skip_existing: false, artifacts: ['a/**'] }, JENKINS)).toMatchObject({
      release: 'r-1_x.y',
      skip_existing: false,
      artifacts: ['a/**'],
    });
  });

  it.each([
    ['no release anywhere', { job_url: 'https://jenkins.example/job/x/job/y/1/' }, /release: required/],
    ['release ..', { job_url: BUILD, release: '..' }, /release/],
    ['release with a slash', { job_url: BUILD, release: 'a/b' }, /release/],
    ['release too long', { job_url: BUILD, release: 'x'.repeat(65) }, /release/],
    ['another origin', { job_url: 'https://evil.example/job/QA_Release_6.4/job/y/1/' }, /configured Jenkins/],
    ['credentials in the URL', { job_url: 'https://u:p@jenkins.example/job/QA_Release_6.4/job/y/1/' }, /credentials/],
    ['not a URL', { job_url: 'not a url' }, /job_url/],
    ['a file URL', { job_url: 'file:///etc/passwd' }, /http/],
    ['no build in the path', { job_url: 'https://jenkins.example/' }, /name a build/],
    ['an unknown field', { job_url: BUILD, extra: 1 }, /unknown field/],
    ['a wrong type', { job_url: BUILD, skip_existing: 'yes' }, /skip_existing/],
    ['no body', undefined, /job_url/],
  ])('refuses %s', (_name, body, message) => {
    expect(() => validateSubmission(body, JENKINS)).toThrow(ValidationError);
    expect(() => validateSubmission(body, JENKINS)).toThrow(message);
  });
});
