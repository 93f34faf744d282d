/**
 * Audio level from a block of time-domain samples (WebAudio's AnalyserNode), on a scale people
 * read: RMS mapped from -60 dBFS (0) to 0 dBFS (1), so quiet speech moves the meter visibly.
 */
export const SPEAKING_RMS = 0.02;

export function rms(samples: ArrayLike<number>): number {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i]! * samples[i]!;
  return Math.sqrt(sum / samples.length);
}

export function meterLevel(samples: ArrayLike<number>): number {
  const r = rms(samples);
  if (r <= 0) return 0;
  const db = 20 * Math.log10(r);
  return Math.min(1, Math.max(0, (db + 60) / 60));
}

/** Peak hold with decay, as level meters do: a short sound stays visible for a moment. */
export function heldLevel(previous: number, current: number, decay = 0.8): number {
  return Math.max(current, previous * decay);
}
