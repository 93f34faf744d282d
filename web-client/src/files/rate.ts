/**
 * Transfer speed and time left, from (time, bytes) samples over the last few seconds: a moving
 * window answers changes in speed within seconds without jumping with every chunk.
 */
const WINDOW_MS = 3000;

export interface RateView {
  bytesPerSecond: number | null;
  /** seconds until done at the current speed; null until a speed is known */
  secondsLeft: number | null;
}

export class RateMeter {
  private samples: Array<{ at: number; bytes: number }> = [];

  constructor(private readonly total: number) {}

  sample(at: number, bytes: number): RateView {
    this.samples.push({ at, bytes });
    while (this.samples.length > 2 && at - this.samples[1]!.at >= WINDOW_MS) this.samples.shift();
    const first = this.samples[0]!;
    const dt = at - first.at;
    if (dt < 250) return { bytesPerSecond: null, secondsLeft: null };
    const bytesPerSecond = ((bytes - first.bytes) * 1000) / dt;
    const secondsLeft = bytesPerSecond > 0 ? Math.ceil((this.total - bytes) / bytesPerSecond) : null;
    return { bytesPerSecond, secondsLeft };
  }
}
