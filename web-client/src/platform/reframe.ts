/**
 * Re-blocking audio for a processor with a fixed frame size (RNNoise: 480 samples at 48 kHz)
 * inside a callback with another block size (Web Audio's script processor: a power of two).
 * No DOM: unit-tested on its own.
 *
 * Output lags input by one frame: the output queue starts with `frameSize` zeros, and every
 * complete input frame adds one processed frame, so the queue never runs dry.
 */
export class Reframer {
  private readonly input: Float32Array;
  private filled = 0;
  private queue: Float32Array;
  private head = 0;
  private tail: number;

  constructor(
    private readonly frameSize: number,
    /** Processes one frame in place. */
    private readonly processFrame: (frame: Float32Array) => void,
  ) {
    this.input = new Float32Array(frameSize);
    this.queue = new Float32Array(frameSize * 8);
    this.tail = frameSize; // one frame of silence: the latency that keeps the queue fed
  }

  /** Consumes `input` and writes as many samples to `output` (the same length). */
  process(input: Float32Array, output: Float32Array): void {
    for (let i = 0; i < input.length; i++) {
      this.input[this.filled++] = input[i]!;
      if (this.filled === this.frameSize) {
        this.processFrame(this.input);
        this.push(this.input);
        this.filled = 0;
      }
    }
    for (let i = 0; i < output.length; i++) {
      output[i] = this.head < this.tail ? this.queue[this.head++]! : 0;
    }
    // Compact now and then, so the queue's storage does not grow with time.
    if (this.head > this.queue.length / 2) {
      this.queue.copyWithin(0, this.head, this.tail);
      this.tail -= this.head;
      this.head = 0;
    }
  }

  private push(frame: Float32Array): void {
    if (this.tail + frame.length > this.queue.length) {
      const bigger = new Float32Array(Math.max(this.queue.length * 2, this.tail + frame.length));
      bigger.set(this.queue.subarray(0, this.tail));
      this.queue = bigger;
    }
    this.queue.set(frame, this.tail);
    this.tail += frame.length;
  }
}
