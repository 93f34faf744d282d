import { useEffect, useState } from 'react';
import { rms, SPEAKING_RMS } from '../../mesh/audioLevel';

let shared: AudioContext | null = null;
/** One AudioContext for the page (browsers limit how many may exist). */
export function sharedAudioContext(): AudioContext | null {
  try {
    shared ??= new AudioContext();
    if (shared.state === 'suspended') void shared.resume().catch(() => undefined);
    return shared;
  } catch {
    return null;
  }
}

/** True while the stream's audio is above a speaking threshold (WebAudio analyser, ~8 checks/s). */
export function useSpeaking(stream: MediaStream | null, enabled = true): boolean {
  const [speaking, setSpeaking] = useState(false);
  useEffect(() => {
    if (!stream || !enabled || stream.getAudioTracks().length === 0) {
      setSpeaking(false);
      return;
    }
    const ctx = sharedAudioContext();
    if (!ctx) return;
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    let last = false;
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      const now = rms(buf) > SPEAKING_RMS;
      if (now !== last) {
        last = now;
        setSpeaking(now);
      }
    }, 120);
    return () => {
      clearInterval(timer);
      source.disconnect();
    };
  }, [stream, enabled]);
  return speaking;
}
