import { afterEach, describe, expect, it, vi } from 'vitest';
import { createReport, formatRatio, median } from '../bench/harness.js';

const machine = { cores: 2, cpu: 'test', memoryGiB: 1, node: 'v20', redis: '7.0', kernel: '6', loadAverage: 0 };

describe('bench report figures', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  const quietReport = () => {
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    return createReport('unit', 'unit', machine);
  };

  it('judges a ratio goal on value / baseline by default', () => {
    const report = quietReport();
    const figure = report.figure('rate', 'jobs/s', 70, { baseline: 100, goal: { ratioAtLeast: 0.7 } });
    expect(figure.ratio).toBeCloseTo(0.7);
    expect(figure.pass).toBe(true);
  });

  it('judges a ratio goal on the ratio a scenario gives (the median of paired rounds), not on the medians', () => {
    // Rounds (ferry, bare): (357, 540), (476, 596), (449, 716): the medians' ratio 449 / 596 = 0.75
    // would pass; the rounds' own ratios 0.66, 0.80, 0.63 have the median 0.66.
    const ferry = [357, 476, 449];
    const bare = [540, 596, 716];
    const paired = median(ferry.map((value, index) => value / (bare[index] as number)));
    const report = quietReport();
    const figure = report.figure('rate', 'jobs/s', median(ferry), { baseline: median(bare), ratio: paired, goal: { ratioAtLeast: 0.7 } });
    expect(figure.value).toBe(449);
    expect(figure.baseline).toBe(596);
    expect(figure.ratio).toBeCloseTo(357 / 540);
    expect(figure.pass).toBe(false);
  });

  it('never prints a ratio that misses its goal as meeting it', () => {
    expect(formatRatio(401 / 573, 'ratio >= 0.7')).toBe('0.699');
    expect(formatRatio(0.7, 'ratio >= 0.7')).toBe('0.700');
    expect(formatRatio(1.5004, 'ratio <= 1.5')).toBe('1.501');
    expect(formatRatio(1.5, 'ratio <= 1.5')).toBe('1.500');
    expect(formatRatio(0.6998, '')).toBe('0.70');
  });
});
