/**
 * Connection quality of one peer from two getStats samples: round trip from the selected candidate
 * pair, packet loss and received bitrate over the interval between the samples, and a plain-words
 * level. The thresholds are those at which a call audibly suffers: past 200 ms round trip or 2 %
 * loss people start talking over each other or hear gaps; past 400 ms or 8 % it is hard to follow.
 */
export interface QualitySample {
  /** ms since any fixed origin */
  at: number;
  /** seconds, from the selected candidate pair; null before one is chosen */
  rtt: number | null;
  packetsReceived: number;
  packetsLost: number;
  bytesReceived: number;
}

export type QualityLevel = 'good' | 'fair' | 'poor' | 'unknown';

export interface Quality {
  level: QualityLevel;
  rttMs: number | null;
  /** percent of packets lost over the interval */
  lossPct: number | null;
  /** kilobits per second received over the interval */
  kbps: number | null;
}

export const UNKNOWN_QUALITY: Quality = { level: 'unknown', rttMs: null, lossPct: null, kbps: null };

export function assessQuality(prev: QualitySample | null, cur: QualitySample): Quality {
  const rttMs = cur.rtt === null ? null : Math.round(cur.rtt * 1000);
  let lossPct: number | null = null;
  let kbps: number | null = null;
  if (prev && cur.at > prev.at) {
    const received = cur.packetsReceived - prev.packetsReceived;
    const lost = Math.max(0, cur.packetsLost - prev.packetsLost);
    if (received + lost > 0) lossPct = Math.round((1000 * lost) / (received + lost)) / 10;
    kbps = Math.round(((cur.bytesReceived - prev.bytesReceived) * 8) / (cur.at - prev.at));
  }
  if (rttMs === null && lossPct === null) return { ...UNKNOWN_QUALITY, kbps };
  const rtt = rttMs ?? 0;
  const loss = lossPct ?? 0;
  const level: QualityLevel = rtt > 400 || loss > 8 ? 'poor' : rtt > 200 || loss > 2 ? 'fair' : 'good';
  return { level, rttMs, lossPct, kbps };
}
