/**
 * RNNoise noise suppression on the microphone, in the browser, offline: the WASM build ships in
 * the npm package (@shiguredo/rnnoise-wasm) and is served by the homeserver with the app. This
 * module is imported lazily, only when RNNoise is chosen, so its 4.8 MB stay out of the initial
 * bundle.
 *
 * The microphone track runs through a Web Audio graph at 48 kHz (RNNoise's rate): a script
 * processor hands blocks to a `Reframer`, which feeds RNNoise 480-sample frames, scaled to the
 * 16-bit range RNNoise expects. A script processor runs on the main thread; an AudioWorklet would
 * not, but would need the WASM loaded inside the worklet's own scope.
 */
import { Rnnoise } from '@shiguredo/rnnoise-wasm';
import { Reframer } from './reframe';

const BLOCK = 512; // ≈ 10.7 ms at 48 kHz

/** A track carrying `mic` with RNNoise applied. Stopping it stops `mic` and the graph too. */
export async function denoise(mic: MediaStreamTrack): Promise<MediaStreamTrack> {
  const rnnoise = await Rnnoise.load();
  const state = rnnoise.createDenoiseState();
  const ctx = new AudioContext({ sampleRate: 48_000 });
  const source = ctx.createMediaStreamSource(new MediaStream([mic]));
  const processor = ctx.createScriptProcessor(BLOCK, 1, 1);
  const sink = ctx.createMediaStreamDestination();
  const reframer = new Reframer(rnnoise.frameSize, (frame) => {
    for (let i = 0; i < frame.length; i++) frame[i] = frame[i]! * 32768;
    state.processFrame(frame);
    for (let i = 0; i < frame.length; i++) frame[i] = frame[i]! / 32768;
  });
  processor.onaudioprocess = (e) => reframer.process(e.inputBuffer.getChannelData(0), e.outputBuffer.getChannelData(0));
  source.connect(processor);
  processor.connect(sink);
  await ctx.resume();
  const out = sink.stream.getAudioTracks()[0];
  if (!out) throw new Error('the audio graph produced no track');
  // Whoever stops the processed track (leaving the room) must also release the microphone and
  // the graph, which nothing else holds on to.
  const stop = out.stop.bind(out);
  out.stop = () => {
    stop();
    mic.stop();
    processor.onaudioprocess = null;
    void ctx.close();
    state.destroy();
  };
  return out;
}
