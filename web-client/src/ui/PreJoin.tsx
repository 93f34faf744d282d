import { useEffect, useRef, useState, type FormEvent } from 'react';
import { useServices } from './services';
import { navigate } from './useHashRoute';
import { carriedQuery, roomFragment, type Route } from '../state/links';
import { describeError } from '../protocol/types';
import styles from './PreJoin.module.css';

type JoinRoute = Extract<Route, { page: 'join' }>;

export function PreJoin({ route }: { route: JoinRoute }) {
  const services = useServices();
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
      .catch((e: unknown) => live && setMediaError(`Camera or microphone unavailable: ${describeError(e)}`));
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
      const summary = await services.rest.join(route.roomId, route.token ?? undefined);
      services.memory.rememberRoom(route.roomId, { passphrase, joinedSeq: summary.latest_seq });
      handedOff.current = true;
      services.handoff = { roomId: route.roomId, preview, mic, cam, audioDeviceId: audioId || undefined, videoDeviceId: videoId || undefined, noiseSuppression: noise, rnnoise };
      // Replace, so the secret in the invite fragment leaves the address bar and the history.
      navigate(roomFragment(route.roomId) + carriedQuery({ ...route.prefs, rnnoise }), true);
    } catch (err) {
      setError(describeError(err));
      setBusy(false);
    }
  };

  const mics = devices.filter((d) => d.kind === 'audioinput');
  const cams = devices.filter((d) => d.kind === 'videoinput');

  return (
    <main className={styles.page}>
      <h1 className={styles.title}>Join the room</h1>
      <p className={styles.room}>
        <code>{route.roomId}</code>
      </p>
      <form className={styles.grid} onSubmit={(e) => void join(e)}>
        <div className={styles.preview}>
          <video ref={videoRef} autoPlay playsInline muted aria-label="Your camera preview" />
          {!cam && <p className={styles.off}>Camera off</p>}
          {mediaError && <p role="alert" className={styles.warn}>{mediaError}</p>}
        </div>
        <div className={styles.fields}>
          <label className={styles.field}>
            <span>Your name</span>
            <input name="name" value={name} onChange={(e) => setName(e.target.value)} maxLength={64} placeholder="e.g. Alice" />
          </label>
          <label className={styles.field}>
            <span>Passphrase {route.secret ? '(from the link)' : ''}</span>
            <input name="passphrase" type="password" value={passphrase} onChange={(e) => setPassphrase(e.target.value)} autoComplete="off" />
          </label>
          {passphrase.trim() === '' && (
            <p role="note" className={styles.warn}>
              No passphrase: the room id is used instead, so anyone who sees the link can read along.
            </p>
          )}
          <label className={styles.field}>
            <span>Microphone</span>
            <select value={audioId} onChange={(e) => setAudioId(e.target.value)}>
              <option value="">Default</option>
              {mics.map((d, i) => (
                <option key={d.deviceId || i} value={d.deviceId}>
                  {d.label || `Microphone ${i + 1}`}
                </option>
              ))}
            </select>
          </label>
          <label className={styles.field}>
            <span>Camera</span>
            <select value={videoId} onChange={(e) => setVideoId(e.target.value)}>
              <option value="">Default</option>
              {cams.map((d, i) => (
                <option key={d.deviceId || i} value={d.deviceId}>
                  {d.label || `Camera ${i + 1}`}
                </option>
              ))}
            </select>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={mic} onChange={(e) => setMic(e.target.checked)} />
            <span>Microphone on when I join</span>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={cam} onChange={(e) => setCam(e.target.checked)} />
            <span>Camera on when I join</span>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={noise} onChange={(e) => setNoise(e.target.checked)} />
            <span>Noise suppression (browser)</span>
          </label>
          <label className={styles.check}>
            <input type="checkbox" checked={rnnoise} onChange={(e) => setRnnoise(e.target.checked)} />
            <span>Stronger noise suppression (RNNoise, loads 5 MB once)</span>
          </label>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? 'Joining…' : 'Join'}
          </button>
          {error && (
            <p role="alert" className={styles.error} data-testid="join-error">
              {error}
            </p>
          )}
          <a href="#/">Back</a>
        </div>
      </form>
    </main>
  );
}
