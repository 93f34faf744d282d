import { useEffect, useRef, useState } from 'react';
import { useSpeaking } from './useSpeaking';
import styles from './Tile.module.css';

export interface TileProps {
  stream: MediaStream | null;
  name: string;
  label: 'camera' | 'screen';
  isSelf: boolean;
  /** connection state for a remote peer */
  state?: string;
  micOn: boolean;
  camOn: boolean;
  testId: string;
}

/** One video (or avatar) with name, speaking ring, and for remote audio a volume slider and local mute. */
export function Tile({ stream, name, label, isSelf, state, micOn, camOn, testId }: TileProps) {
  const videoRef = useRef<HTMLVideoElement>(null);
  const audioRef = useRef<HTMLAudioElement>(null);
  const [volume, setVolume] = useState(1);
  const [muted, setMuted] = useState(false);
  const hasAudio = !isSelf && label === 'camera' && !!stream?.getAudioTracks().length;
  const speaking = useSpeaking(label === 'camera' ? stream : null, isSelf ? micOn : true);
  const showVideo = !!stream?.getVideoTracks().length && (label === 'screen' || camOn);

  useEffect(() => {
    if (videoRef.current && videoRef.current.srcObject !== stream) videoRef.current.srcObject = stream;
  }, [stream, showVideo]);
  useEffect(() => {
    if (audioRef.current && audioRef.current.srcObject !== stream) audioRef.current.srcObject = stream;
  }, [stream, hasAudio]);
  useEffect(() => {
    if (audioRef.current) {
      audioRef.current.volume = volume;
      audioRef.current.muted = muted;
    }
  }, [volume, muted]);

  const title = label === 'screen' ? `${name}'s screen` : isSelf ? `${name} (you)` : name;
  return (
    <figure className={`${styles.tile} ${speaking ? styles.speaking : ''}`} data-testid={testId} data-speaking={speaking} aria-label={title}>
      {showVideo ? (
        <video ref={videoRef} autoPlay playsInline muted className={isSelf && label === 'camera' ? styles.mirror : undefined} />
      ) : (
        <div className={styles.avatar} aria-hidden="true">
          {name.slice(0, 1).toUpperCase()}
        </div>
      )}
      {hasAudio && <audio ref={audioRef} autoPlay />}
      <figcaption className={styles.caption}>
        <span className={styles.name}>{title}</span>
        {label === 'camera' && <span className={styles.badge}>{micOn ? (speaking ? 'speaking' : 'mic on') : 'muted'}</span>}
        {state && state !== 'connected' && <span className={styles.state} role="status">{state}</span>}
      </figcaption>
      {hasAudio && (
        <div className={styles.audioControls}>
          <label>
            <span className="visually-hidden">Volume for {name}</span>
            <input type="range" min={0} max={1} step={0.05} value={volume} onChange={(e) => setVolume(Number(e.target.value))} aria-label={`Volume for ${name}`} />
          </label>
          <button type="button" onClick={() => setMuted(!muted)} aria-pressed={muted} aria-label={muted ? `Unmute ${name} for me` : `Mute ${name} for me`}>
            {muted ? 'Unmute' : 'Mute'}
          </button>
        </div>
      )}
    </figure>
  );
}
