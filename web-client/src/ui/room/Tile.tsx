import { useEffect, useRef, useState } from 'react';
import { useSpeaking } from './useSpeaking';
import type { Quality } from '../../mesh/quality';
import { Icon } from '../icons';
import { useT } from '../services';
import styles from './Tile.module.css';

export interface TileProps {
  stream: MediaStream | null;
  name: string;
  label: 'camera' | 'screen';
  isSelf: boolean;
  /** connection state for a remote peer */
  state?: string;
  /** the peer's key check differs from ours: no call is possible */
  keyMismatch?: boolean;
  quality?: Quality;
  micOn: boolean;
  camOn: boolean;
  testId: string;
  /** The chosen speaker ('' = default), applied with setSinkId where the browser has it. */
  sinkId?: string;
  /** On the stage because the user chose it. */
  pinned?: boolean;
  onPin?(): void;
}

/** One video (or avatar) with name, speaking ring, connection quality, and for remote audio a volume slider and local mute. */
export function Tile({ stream, name, label, isSelf, state, keyMismatch, quality, micOn, camOn, testId, sinkId, pinned, onPin }: TileProps) {
  const t = useT();
  const videoRef = useRef<HTMLVideoElement>(null);
  const audioRef = useRef<HTMLAudioElement>(null);
  const [volume, setVolume] = useState(1);
  const [muted, setMuted] = useState(false);
  // Remote screen shares can carry the shared tab's sound (where the browser offered it).
  const hasAudio = !isSelf && !!stream?.getAudioTracks().length;
  const speaking = useSpeaking(label === 'camera' ? stream : null, isSelf ? micOn : true);
  const showVideo = !!stream?.getVideoTracks().length && (label === 'screen' || camOn);

  useEffect(() => {
    if (videoRef.current && videoRef.current.srcObject !== stream) videoRef.current.srcObject = stream;
  }, [stream, showVideo]);
  useEffect(() => {
    if (audioRef.current && audioRef.current.srcObject !== stream) audioRef.current.srcObject = stream;
  }, [stream, hasAudio]);
  useEffect(() => {
    const el = audioRef.current as (HTMLAudioElement & { setSinkId?(id: string): Promise<void> }) | null;
    if (!el?.setSinkId || sinkId === undefined) return;
    el.setSinkId(sinkId).catch((e: unknown) => console.warn('[confab] setSinkId', e));
  }, [sinkId, hasAudio]);
  useEffect(() => {
    if (audioRef.current) {
      audioRef.current.volume = volume;
      audioRef.current.muted = muted;
    }
  }, [volume, muted]);

  const title = label === 'screen' ? t('tile.screenOf', { name }) : isSelf ? t('tile.you', { name }) : name;
  const showQuality = !isSelf && label === 'camera' && !keyMismatch && state === 'connected' && quality && quality.level !== 'unknown';
  const details = quality
    ? t('quality.details', { rtt: quality.rttMs ?? '–', loss: quality.lossPct ?? '–', kbps: quality.kbps ?? '–' })
    : '';
  return (
    <figure className={`${styles.tile} ${speaking ? styles.speaking : ''}`} data-testid={testId} data-speaking={speaking} data-quality={quality?.level ?? 'unknown'} aria-label={title}>
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
        {label === 'camera' && <span className={styles.badge}>{micOn ? (speaking ? t('tile.speaking') : t('tile.micOn')) : t('tile.muted')}</span>}
        {keyMismatch ? (
          <span className={styles.state} role="status" data-testid="key-mismatch">
            <Icon name="warning" /> {t('tile.keyMismatch')}
          </span>
        ) : (
          state && state !== 'connected' && <span className={styles.state} role="status">{t(`peer.${state as 'new'}`)}</span>
        )}
        {showQuality && (
          <span className={styles.badge} data-testid="quality" title={details}>
            <Icon name="signal" /> {t(`quality.${quality.level as 'good'}`)}
            <span className="visually-hidden">, {details}</span>
          </span>
        )}
      </figcaption>
      {onPin && (
        <button type="button" className={styles.pin} onClick={onPin} aria-pressed={!!pinned} aria-label={pinned ? t('tile.unpin', { name: title }) : t('tile.pin', { name: title })} data-testid="pin">
          {pinned ? t('tile.unpinShort') : t('tile.pinShort')}
        </button>
      )}
      {hasAudio && (
        <div className={styles.audioControls}>
          <label>
            <span className="visually-hidden">{t('tile.volumeFor', { name })}</span>
            <input type="range" min={0} max={1} step={0.05} value={volume} onChange={(e) => setVolume(Number(e.target.value))} aria-label={t('tile.volumeFor', { name })} />
          </label>
          <button type="button" onClick={() => setMuted(!muted)} aria-pressed={muted} aria-label={muted ? t('tile.unmuteFor', { name }) : t('tile.muteFor', { name })}>
            {muted ? t('controls.unmute') : t('controls.mute')}
          </button>
        </div>
      )}
    </figure>
  );
}
