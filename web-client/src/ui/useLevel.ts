import { useEffect, useState } from 'react';
import { heldLevel, meterLevel } from '../mesh/audioLevel';
import { sharedAudioContext } from './room/useSpeaking';

/** The microphone level of a stream (0–1), sampled about ten times a second, for the pre-join meter. */
export function useLevel(stream: MediaStream | null): number {
  const [level, setLevel] = useState(0);
  useEffect(() => {
    if (!stream || stream.getAudioTracks().length === 0) {
      setLevel(0);
      return;
    }
    const ctx = sharedAudioContext();
    if (!ctx) return;
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      const now = meterLevel(buf);
      setLevel((prev) => heldLevel(prev, now));
    }, 100);
    return () => {
      clearInterval(timer);
      source.disconnect();
    };
  }, [stream]);
  return level;
}
