import { describe, expect, it } from 'vitest';
import { assessQuality, type QualitySample } from './quality';
import { heldLevel, meterLevel, rms } from './audioLevel';

const sample = (at: number, rtt: number | null, received: number, lost: number, bytes: number): QualitySample => ({ at, rtt, packetsReceived: received, packetsLost: lost, bytesReceived: bytes });

describe('connection quality', () => {
  it('is unknown before anything was measured', () => {
    expect(assessQuality(null, sample(0, null, 0, 0, 0)).level).toBe('unknown');
  });
  it('computes round trip, loss and bitrate over the interval', () => {
    const q = assessQuality(sample(0, 0.02, 1000, 0, 100_000), sample(2000, 0.03, 1990, 10, 350_000));
    expect(q).toEqual({ level: 'good', rttMs: 30, lossPct: 1, kbps: 1000 });
  });
  it('says fair past 200 ms or 2 % loss, and poor past 400 ms or 8 %', () => {
    expect(assessQuality(null, sample(0, 0.25, 0, 0, 0)).level).toBe('fair');
    expect(assessQuality(null, sample(0, 0.5, 0, 0, 0)).level).toBe('poor');
    expect(assessQuality(sample(0, 0.01, 0, 0, 0), sample(1000, 0.01, 95, 5, 0)).level).toBe('fair');
    expect(assessQuality(sample(0, 0.01, 0, 0, 0), sample(1000, 0.01, 90, 10, 0)).level).toBe('poor');
  });
  it('does not count loss totals that went down (a stream restarted) as negative loss', () => {
    expect(assessQuality(sample(0, 0.01, 100, 50, 0), sample(1000, 0.01, 200, 0, 0)).lossPct).toBe(0);
  });
});

describe('audio level', () => {
  it('maps RMS in dBFS to the meter, 0 at silence and 1 at full scale', () => {
    expect(rms([])).toBe(0);
    expect(meterLevel(new Float32Array(128))).toBe(0);
    expect(meterLevel(new Float32Array(128).fill(1))).toBe(1);
    expect(meterLevel(new Float32Array(128).fill(0.001))).toBeCloseTo(0, 5); // -60 dBFS
    expect(meterLevel(new Float32Array(128).fill(0.0316))).toBeCloseTo(0.5, 2); // -30 dBFS
  });
});

describe('meter hold', () => {
  it('rises at once and falls gradually', () => {
    expect(heldLevel(0.1, 0.9)).toBe(0.9);
    expect(heldLevel(0.9, 0)).toBeCloseTo(0.72);
    let l = 1;
    for (let i = 0; i < 30; i++) l = heldLevel(l, 0);
    expect(l).toBeLessThan(0.01);
  });
});
