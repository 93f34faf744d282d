/**
 * Sender encodings as the mesh grows. Every participant uploads one copy of each stream per peer,
 * so uplink use grows linearly with the mesh: bitrate and resolution go down as peers are added.
 * Screen shares keep full resolution longer (text must stay legible) and trade frame rate instead.
 */

export type StreamKind = 'audio' | 'camera' | 'screen';

export interface EncodingPolicy {
  maxBitrate: number;
  scaleResolutionDownBy?: number;
  maxFramerate?: number;
}

/** `remotePeers` = number of other devices this one sends to. */
export function encodingFor(kind: StreamKind, remotePeers: number): EncodingPolicy {
  const n = Math.max(1, remotePeers);
  if (kind === 'audio') return { maxBitrate: n <= 3 ? 64_000 : 40_000 };
  if (kind === 'screen') {
    if (n <= 1) return { maxBitrate: 2_500_000, scaleResolutionDownBy: 1, maxFramerate: 30 };
    if (n <= 3) return { maxBitrate: 1_500_000, scaleResolutionDownBy: 1, maxFramerate: 15 };
    return { maxBitrate: 900_000, scaleResolutionDownBy: n <= 5 ? 1 : 1.5, maxFramerate: 8 };
  }
  if (n <= 1) return { maxBitrate: 1_500_000, scaleResolutionDownBy: 1, maxFramerate: 30 };
  if (n <= 2) return { maxBitrate: 900_000, scaleResolutionDownBy: 1.5, maxFramerate: 30 };
  if (n <= 4) return { maxBitrate: 500_000, scaleResolutionDownBy: 2, maxFramerate: 24 };
  return { maxBitrate: 250_000, scaleResolutionDownBy: 3, maxFramerate: 20 };
}

/** Columns × rows for `count` tiles in a box of the given aspect ratio, maximising tile size. */
export function gridShape(count: number, width: number, height: number, tileAspect = 16 / 9): { cols: number; rows: number } {
  if (count <= 0) return { cols: 1, rows: 1 };
  let best = { cols: 1, rows: count, size: 0 };
  for (let cols = 1; cols <= count; cols++) {
    const rows = Math.ceil(count / cols);
    const w = width / cols;
    const h = height / rows;
    const tileW = Math.min(w, h * tileAspect);
    if (tileW > best.size) best = { cols, rows, size: tileW };
  }
  return { cols: best.cols, rows: best.rows };
}
