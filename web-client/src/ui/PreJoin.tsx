import { useEffect, useRef, useState, type FormEvent } from 'react';
import { joinThroughLobby } from '../state/knock';
import { useServices, useT } from './services';
import { ThemeSwitch } from './ThemeSwitch';
import { useLevel } from './useLevel';
import { navigate } from './useHashRoute';
import { carriedQuery, roomFragment, type Route } from '../state/links';
import { describeError } from '../protocol/types';
import styles from './PreJoin.module.css';

type JoinRoute = Extract<Route, { page: 'join' }>;

/** Between two asks of a knocker waiting at a locked room's lobby. */
const KNOCK_INTERVAL_MS = 2000;

export function PreJoin({ route }: { route: JoinRoute }) {
  const services = useServices();
  const t = useT();
  const remembered = services.memory.room(route.roomId);
  const [name, setName] = useState(route.prefs.name ?? services.memory.displayName);
  const [passphrase, setPassphrase] = useState(route.secret ?? remembered?.passphrase ?? '');
  const [mic, setMic] = useState(route.prefs.mic ?? true);
  const [cam, setCam] = useState(route.prefs.cam ?? true);
  const [noise, setNoise] = useState(true);
  const [rnnoise, setRnnoise] = useState(route.prefs.rnnoise ?? false);
  const [devices, setDevices] = useState<MediaDeviceInfo[]>([]);
  const [audioId, setAudioId] = useState('');
  const [videoId, setVideoId] = useState('');
  const [preview, setPreview] = useState<MediaStream | null>(null);
  const [mediaError, setMediaError] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [knocking, setKnocking] = useState(false);
  const left = useRef(false);
  useEffect(
    () => () => {
      left.current = true;
    },
    [],
  );
  const videoRef = useRef<HTMLVideoElement>(null);
  const handedOff = useRef(false);

  // Preview: capture what the room will use, so joining needs no second permission prompt.
  useEffect(() => {
    let live = true;
    let got: MediaStream | null = null;
    const constraints: MediaStreamConstraints = {
      audio: { noiseSuppression: noise, echoCancellation: true, ...(audioId ? { deviceId: { exact: audioId } } : {}) },
      video: cam ? { width: { ideal: 1280 }, height: { ideal: 720 }, ...(videoId ? { deviceId: { exact: videoId } } : {}) } : false,
    };
    navigator.mediaDevices
      ?.getUserMedia(constraints)
      .then(async (s) => {
        if (!live) return s.getTracks().forEach((t) => t.stop());
        got = s;
        setPreview(s);
        setMediaError(null);
        setDevices(await navigator.mediaDevices.enumerateDevices());
      })
      .catch((e: unknown) => live && setMediaError(t('prejoin.mediaError', { why: describeError(e) })));
    return () => {
      live = false;
      if (got && !handedOff.current) got.getTracks().forEach((t) => t.stop());
    };
  }, [cam, audioId, videoId, noise]);

  useEffect(() => {
    if (videoRef.current) videoRef.current.srcObject = preview;
  }, [preview]);

  const join = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      services.memory.displayName = name.trim();
      await services.ensureSession();
      // A locked room with a lobby answers `knocking`: ask again until the hosts answer.
      const summary = await joinThroughLobby(() => services.rest.join(route.roomId, route.token ?? undefined), {
        intervalMs: KNOCK_INTERVAL_MS,
        wait: (ms) => new Promise((ok) => setTimeout(ok, ms)),
        onKnocking: () => setKnocking(true),
        cancelled: () => left.current,
      });
      services.memory.rememberRoom(route.roomId, { passphrase, joinedSeq: summary.latest_seq });
      handedOff.current = true;
      services.handoff = { roomId: route.roomId, preview, mic, cam, audioDeviceId: audioId || undefined, videoDeviceId: videoId || undefined, noiseSuppression: noise, rnnoise };
      // Replace, so the secret in the invite fragment leaves the address bar and the history.
      navigate(roomFragment(route.roomId) + carriedQuery({ ...route.prefs, rnnoise }), true);
    } catch (err) {
      if (left.current) return;
      setKnocking(false);
      setError(describeError(err));
      setBusy(false);
    }
  };

  const level = useLevel(preview);
  const mics = devices.filter((d) => d.kind === 'audioinput');
  const cams = devices.filter((d) => d.kind === 'videoinput');

  return (
    <main className={styles.page}>
      <div className={styles.top}>
        <h1 className={styles.title}>{t('prejoin.title')}</h1>
        <ThemeSwitch />
      </div>
      <p className={styles.room}>
        <code>{route.roomId}</code>
      </p>
      <form className={styles.grid} onSubmit={(e) => void join(e)}>
        <div className={styles.preview}>
          <video ref={videoRef} autoPlay playsInline muted aria-label={t('prejoin.preview')} />
          {!cam && <p className={styles.off}>{t('prejoin.cameraOff')}</p>}
          {mediaError && <p role="alert" className={styles.warn}>{mediaError}</p>}
        </div>
        <div className={styles.fields}>
          <label className={styles.field}>
            <span>{t('prejoin.name')}</span>
            <input name="name" value={name} onChange={(e) => setName(e.target.value)} maxLength={64} placeholder={t('common.namePlaceholder')} />
          </label>
          <label className={styles.field}>
            <span>{route.secret ? t('prejoin.passphraseFromLink') : t('prejoin.passphrase')}</span>
            <input name="passphrase" type="password" value={passphrase} onChange={(e) => setPassphrase(e.target.value)} autoComplete="off" />
          </label>
          {passphrase.trim() === '' && (
            <p role="note" className={styles.warn} data-testid="not-private">
              {t('e2ee.notPrivateLong')}
            </p>
          )}
          <label className={styles.field}>
            <span>{t('devices.microphone')}</span>
            <select value={audioId} onChange={(e) => setAudioId(e.target.value)}>
              <option value="">{t('devices.default')}</option>
              {mics.map((d, i) => (
                <option key={d.deviceId || i} value={d.deviceId}>
                  {d.label || t('devices.micN', { n: i + 1 })}
                </option>
              ))}
            </select>
          </label>
          <label className={styles.field}>
            <span>{t('devices.camera')}</span>
            <select value={videoId} onChange={(e) => setVideoId(e.target.value)}>
              <option value="">{t('devices.default')}</option>
              {cams.map((d, i) => (
                <option key={d.deviceId || i} value={d.deviceId}>
                  {d.label || t('devices.camN', { n: i + 1 })}
                </option>
              ))}
            </select>
          </label>
          <div className={styles.field}>
            <span id="mic-level-label">{t('prejoin.micLevel')}</span>
            <meter min={0} max={1} low={0.15} high={0.9} optimum={0.5} value={level} aria-labelledby="mic-level-label" data-testid="mic-level" data-level={level.toFixed(3)} />
          </div>
          <label className={styles.check}>
            <input type="checkbox" checked={mic} onChange={(e) => setMic(e.target.checked)} />
            <span>{t('prejoin.micOn')}</span>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={cam} onChange={(e) => setCam(e.target.checked)} />
            <span>{t('prejoin.camOn')}</span>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={noise} onChange={(e) => setNoise(e.target.checked)} />
            <span>{t('prejoin.noise')}</span>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={rnnoise} onChange={(e) => setRnnoise(e.target.checked)} />
            <span>{t('prejoin.rnnoise')}</span>
          </label>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? t('prejoin.joining') : t('common.join')}
          </button>
          {knocking && (
            <p role="status" data-testid="knocking">
              {t('prejoin.knocking')}
            </p>
          )}
          {error && (
            <p role="alert" className={styles.error} data-testid="join-error">
              {error}
            </p>
          )}
          <a href="#/">{t('common.back')}</a>
        </div>
      </form>
    </main>
  );
}
