import { describe, expect, it } from 'vitest';
import { Reframer } from './reframe';

describe('Reframer', () => {
  it('passes every sample through, in order, one frame late, whatever the block size', () => {
    const seen: number[] = [];
    const r = new Reframer(480, (f) => {
      expect(f.length).toBe(480);
      for (let i = 0; i < f.length; i++) f[i] = f[i]! * 2; // the "processing"
    });
    let next = 1;
    for (let block = 0; block < 40; block++) {
      const input = Float32Array.from({ length: 512 }, () => next++);
      const output = new Float32Array(512);
      r.process(input, output);
      seen.push(...output);
    }
    // The first frame's worth is the initial silence; then the doubled input, gap-free.
    expect(seen.slice(0, 480).every((v) => v === 0)).toBe(true);
    const rest = seen.slice(480);
    expect(rest.length).toBe(40 * 512 - 480);
    rest.forEach((v, i) => expect(v).toBe((i + 1) * 2));
  });

  it('keeps its storage bounded over a long run', () => {
    const r = new Reframer(480, () => {});
    const input = new Float32Array(256);
    const output = new Float32Array(256);
    for (let i = 0; i < 100_000; i++) r.process(input, output);
    expect((r as unknown as { queue: Float32Array }).queue.length).toBeLessThanOrEqual(480 * 8);
  });
});
