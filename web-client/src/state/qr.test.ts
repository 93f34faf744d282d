import { describe, expect, it } from 'vitest';
import { qrModules, qrPath } from './qr';

/** A 7×7 finder pattern: dark ring, light ring, dark 3×3 centre. */
function isFinder(m: boolean[][], top: number, left: number): boolean {
  for (let y = 0; y < 7; y++) {
    for (let x = 0; x < 7; x++) {
      const ring = Math.max(Math.abs(y - 3), Math.abs(x - 3));
      if (m[top + y]![left + x] !== (ring !== 2)) return false;
    }
  }
  return true;
}

describe('QR codes of invite links', () => {
  const link = 'https://confab.example/#/join/!abcdefghijklmnop:confab.example/Zx9_-token0123456789abcdefghijklmnopqrstu/secret-part';

  it('is a square symbol of a valid version with the three finder patterns', async () => {
    const m = await qrModules(link);
    const n = m.length;
    expect(m.every((row) => row.length === n)).toBe(true);
    expect((n - 17) % 4).toBe(0);
    expect(n).toBeGreaterThanOrEqual(21);
    expect(isFinder(m, 0, 0)).toBe(true);
    expect(isFinder(m, 0, n - 7)).toBe(true);
    expect(isFinder(m, n - 7, 0)).toBe(true);
    expect(isFinder(m, n - 7, n - 7)).toBe(false);
  });

  it('is the same for the same text and grows with it', async () => {
    expect(await qrModules(link)).toEqual(await qrModules(link));
    expect((await qrModules(link + '/' + 'x'.repeat(200))).length).toBeGreaterThan((await qrModules(link)).length);
  });

  it('draws each run of dark modules as one rectangle inside the quiet zone', () => {
    const m = [
      [true, true, false],
      [false, true, false],
      [true, false, true],
    ];
    const { path, size } = qrPath(m, 4);
    expect(size).toBe(11);
    expect(path).toBe('M4 4h2v1h-2zM5 5h1v1h-1zM4 6h1v1h-1zM6 6h1v1h-1z');
  });
});
