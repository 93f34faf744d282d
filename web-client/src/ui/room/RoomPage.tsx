import { useEffect, useState, useSyncExternalStore } from 'react';
import { useServices } from '../services';
import { navigate } from '../useHashRoute';
import { iceTransportPolicy, inviteFragment, type MediaPrefs } from '../../state/links';
import { RoomSession } from '../../state/roomSession';
import { deriveRoomKey, effectivePassphrase } from '../../crypto/e2ee';
import { describeError } from '../../protocol/types';
import { browserMedia, createPeerConnection, randomHex, wsFactory, wsUrl } from '../../platform/browser';
import type { RoomViewState } from '../../state/roomState';
import { CallGrid } from './CallGrid';
import { ChatPanel } from './ChatPanel';
import { Controls } from './Controls';
import { HostPanel } from './HostPanel';
import styles from './RoomPage.module.css';

declare global {
  interface Window {
    /** Diagnostics for the browser tests: state without media objects, and inbound getStats per peer. */
    __confab?: { state(): unknown; stats(): Promise<unknown>; pending(): number; log(): string[] };
  }
}

function RoomView({ session, passphrase }: { session: RoomSession; passphrase: string }) {
  const services = useServices();
  const state: RoomViewState = useSyncExternalStore(session.store.subscribe, session.store.get);
  const [hostOpen, setHostOpen] = useState(false);

  if (state.ended) {
    return (
      <main className={styles.ended}>
        <h1>{state.ended.reason === 'left' ? 'You left' : 'The meeting ended for you'}</h1>
        <p role="alert" data-testid="ended">{state.ended.text}</p>
        {state.ended.reason === 'replaced' && (
          <button type="button" className="primary" onClick={() => void session.takeOver()}>
            Use this tab instead
          </button>
        )}
        <a href="#/">Home</a>
      </main>
    );
  }

  return (
    <div className={styles.room} data-connection={state.connection}>
      <header className={styles.header}>
        <strong>Confab</strong>
        <span className={styles.meta}>
          {state.locked ? <span data-testid="locked">🔒 locked</span> : <span>open</span>} ·{' '}
          <span data-testid="connection">{state.connection}</span>
        </span>
      </header>
      {(state.banner || state.weakKey) && (
        <div role="status" className={`${styles.banner} ${styles[state.banner?.tone ?? 'warn']}`} data-testid="banner">
          {state.banner?.text ?? 'No passphrase: anyone who sees the link can read along.'}
        </div>
      )}
      <div className={styles.body}>
        <CallGrid state={state} />
        {state.chatOpen && <ChatPanel state={state} session={session} />}
        {hostOpen && state.isHost && <HostPanel state={state} rest={services.rest} passphrase={passphrase} />}
      </div>
      <Controls
        state={state}
        session={session}
        chatOpen={state.chatOpen}
        onToggleChat={() => session.setChatOpen(!state.chatOpen)}
        hostOpen={hostOpen}
        onToggleHost={() => setHostOpen(!hostOpen)}
        onLeave={() => void session.leave().then(() => navigate('#/'))}
      />
    </div>
  );
}

export default function RoomPage({ roomId, prefs }: { roomId: string; prefs: MediaPrefs }) {
  const services = useServices();
  const [session, setSession] = useState<RoomSession | null>(null);
  const [phase, setPhase] = useState('Deriving the room key…');
  const [error, setError] = useState<string | null>(null);
  const memory = services.memory.room(roomId);

  useEffect(() => {
    if (!memory) {
      navigate(inviteFragment(roomId, null, null), true);
      return;
    }
    let live = true;
    let created: RoomSession | null = null;
    const recentLog: string[] = [];
    (async () => {
      const { weak } = effectivePassphrase(memory.passphrase, roomId);
      const key = await deriveRoomKey(memory.passphrase, roomId);
      setPhase('Connecting…');
      const guest = await services.ensureSession();
      const config = await services.config();
      // After a reload this browser is an earlier member: joining needs no invite.
      if (!services.handoff || services.handoff.roomId !== roomId) await services.rest.join(roomId);
      if (!live) return;
      const handoff = services.handoff?.roomId === roomId ? services.handoff : null;
      services.handoff = null;
      created = new RoomSession({
        roomId,
        session: guest,
        myName: services.memory.displayName || prefs.name || '',
        key,
        weakKey: weak,
        rest: services.rest,
        memory: services.memory,
        wsUrl: wsUrl(),
        wsFactory,
        iceServers: config.ice_servers,
        iceTransportPolicy: iceTransportPolicy(prefs),
        createPeerConnection,
        media: browserMedia,
        randomId: () => randomHex(16),
        now: () => Date.now(),
        log: (m, e) => {
          console.debug('[confab]', m, e ?? '');
          recentLog.push(`${new Date().toISOString().slice(11, 23)} ${m}${e === undefined ? '' : ` ${String(e)}`}`);
          if (recentLog.length > 200) recentLog.shift();
        },
      });
      window.__confab = {
        state: () => {
          const s = created!.store.get();
          return { ...s, local: { mic: s.local.mic, cam: s.local.cam, screen: s.local.screen, rnnoise: s.local.rnnoise ?? false }, peers: Object.fromEntries(Object.entries(s.peers).map(([k, p]) => [k, { ...p, streams: p.streams.map((x) => ({ id: x.id, label: x.label, tracks: x.stream.getTracks().length })) }])), transfers: s.transfers.map((t) => ({ ...t, data: undefined })) };
        },
        stats: () => created!.mesh.inboundStats(),
        pending: () => created!.pendingCount(),
        log: () => [...recentLog],
      };
      setSession(created);
      await created.start({
        mic: handoff?.mic ?? prefs.mic ?? true,
        cam: handoff?.cam ?? prefs.cam ?? true,
        audioDeviceId: handoff?.audioDeviceId,
        videoDeviceId: handoff?.videoDeviceId,
        noiseSuppression: handoff?.noiseSuppression ?? true,
        rnnoise: handoff?.rnnoise ?? prefs.rnnoise ?? false,
        preview: handoff?.preview ?? null,
      });
      if (prefs.screen) await created.toggleScreen();
    })().catch((e: unknown) => live && setError(describeError(e)));
    return () => {
      live = false;
      created?.dispose();
    };
  }, [roomId]);

  if (error) {
    return (
      <main className={styles.ended}>
        <h1>Cannot open this room</h1>
        <p role="alert" data-testid="room-error">{error}</p>
        <a href="#/">Home</a>
      </main>
    );
  }
  if (!session || !memory) return <p role="status" className={styles.phase}>{phase}</p>;
  return <RoomView session={session} passphrase={memory.passphrase} />;
}
