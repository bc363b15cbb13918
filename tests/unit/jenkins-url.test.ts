import { describe, expect, it } from 'vitest';
import { artifactUrl, moduleBuildUrl, moduleName, parseBuildUrl, releaseFromJobUrl } from '../../shared/jenkins-url.js';

describe('Jenkins naming rules', () => {
  it.each([
    ['BUSINESS_POLICY_ESXI', 'business_policy'],
    ['ROUTING_MODULE', 'routing'],
    ['EDGE_MODULE_ESXI', 'edge_module'],
    ['EDGE_SERVICES', 'edge_services'],
    ['nightly-run', 'nightly_run'],
    ['BUSINESS-POLICY-ESXI', 'business_policy'],
  ])('module name of %s is %s', (key, expected) => {
    expect(moduleName(key)).toBe(expected);
  });

  it('splits a build URL and builds module and artifact URLs beside it', () => {
    const location = parseBuildUrl('https://jenkins.example/job/QA_Release_6.4/job/main-regression/216');
    expect(location).toEqual({
      folderUrl: 'https://jenkins.example/job/QA_Release_6.4/',
      jobName: 'main-regression',
      build: '216',
      buildUrl: 'https://jenkins.example/job/QA_Release_6.4/job/main-regression/216/',
    });
    expect(moduleBuildUrl(location?.folderUrl ?? '', 'BUSINESS_POLICY_ESXI', 101)).toBe(
      'https://jenkins.example/job/QA_Release_6.4/job/BUSINESS-POLICY-ESXI/101/',
    );
    expect(artifactUrl('https://j.example/job/a/1/', 'hapy/reports/a b#1.xml')).toBe('https://j.example/job/a/1/artifact/hapy/reports/a%20b%231.xml');
  });

  it('builds no artifact URL from a path that would leave the build', () => {
    for (const unsafe of ['../x.xml', 'a/../../b.xml', 'a//b.xml', './a.xml', 'a\\b.xml', '']) {
      expect(() => artifactUrl('https://j.example/jenkins/job/a/1/', unsafe)).toThrow(/not a safe artifact path/);
    }
    expect(artifactUrl('https://j.example/job/a/1/', '.../..x.xml')).toBe('https://j.example/job/a/1/artifact/.../..x.xml');
  });

  it('is null for URLs that name no build', () => {
    expect(parseBuildUrl('https://jenkins.example/')).toBeNull();
    expect(parseBuildUrl('https://jenkins.example/view/all/')).toBeNull();
  });

  it('derives the release from a /QA_Release_<x.y>/ segment only', () => {
    expect(releaseFromJobUrl('https://j.example/job/QA_Release_6.4/job/x/1/')).toBe('6.4');
    expect(releaseFromJobUrl('https://j.example/job/Release_6.4/job/x/1/')).toBeUndefined();
  });
});
