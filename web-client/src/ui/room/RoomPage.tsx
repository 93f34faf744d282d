import { useEffect, useRef, useState, useSyncExternalStore } from 'react';
import { useServices, useT } from '../services';
import { navigate } from '../useHashRoute';
import { iceTransportPolicy, inviteFragment, type MediaPrefs } from '../../state/links';
import { RoomSession } from '../../state/roomSession';
import { deriveRoomKeyMaterial, effectivePassphrase } from '../../crypto/e2ee';
import { browserFileStore } from '../../platform/opfs';
import { describeError } from '../../protocol/types';
import { shortcutFor } from '../../state/shortcuts';
import {
  browserAttention,
  browserMedia,
  createPeerConnection,
  notificationPermission,
  randomHex,
  requestNotifications,
  wsFactory,
  wsUrl,
  type NotificationChoice,
} from '../../platform/browser';
import { canShare, type RoomViewState } from '../../state/roomState';
import { Icon } from '../icons';
import { ThemeSwitch } from '../ThemeSwitch';
import { CallGrid } from './CallGrid';
import { ChatPanel } from './ChatPanel';
import { Controls } from './Controls';
import { HelpDialog } from './HelpDialog';
import { HostPanel } from './HostPanel';
import { DevicesPanel } from './DevicesPanel';
import { SharePanel } from './SharePanel';
import styles from './RoomPage.module.css';

declare global {
  interface Window {
    /** Diagnostics for the browser tests: state without media objects, and inbound getStats per peer. */
    __confab?: { state(): unknown; stats(): Promise<unknown>; pending(): number; log(): string[] };
  }
}

function isEditable(el: EventTarget | null): boolean {
  if (!(el instanceof HTMLElement)) return false;
  return el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName);
}

/** "End-to-end encrypted" with the key's fingerprint, or plainly "not private" without a passphrase. */
function E2eeBadge({ state }: { state: RoomViewState }) {
  const t = useT();
  if (state.weakKey) {
    return (
      <span className={styles.notPrivate} data-testid="e2ee" data-private="false">
        <Icon name="warning" /> {t('e2ee.notPrivate')}
      </span>
    );
  }
  return (
    <span className={styles.e2ee} data-testid="e2ee" data-private="true" title={t('e2ee.fingerprintHelp')}>
      <Icon name="key" /> {t('e2ee.encrypted')} <span className="visually-hidden">{t('e2ee.fingerprint')}</span>
      <code data-testid="fingerprint">{state.fingerprint}</code>
    </span>
  );
}

function NotifyButton() {
  const t = useT();
  const [perm, setPerm] = useState<NotificationChoice>(() => notificationPermission());
  if (perm !== 'default') return null;
  return (
    <button type="button" className={styles.small} onClick={() => void requestNotifications().then(setPerm)} data-testid="enable-notifications">
      <Icon name="bell" /> {t('room.notifyMe')}
    </button>
  );
}

function RoomView({ session }: { session: RoomSession }) {
  const services = useServices();
  const t = services.t;
  const state: RoomViewState = useSyncExternalStore(session.store.subscribe, session.store.get);
  const [hostOpen, setHostOpen] = useState(false);
  const [helpOpen, setHelpOpen] = useState(false);
  const [devicesOpen, setDevicesOpen] = useState(false);
  const devicesButton = useRef<HTMLButtonElement>(null);
  const [shareOpen, setShareOpen] = useState(false);
  const shareButton = useRef<HTMLButtonElement>(null);
  // Panels opened by the user take the focus; the chat that is open on arrival does not.
  const [focusPanels, setFocusPanels] = useState(false);
  const chatButton = useRef<HTMLButtonElement>(null);
  const hostButton = useRef<HTMLButtonElement>(null);

  const toggleChat = () => {
    setFocusPanels(true);
    session.setChatOpen(!session.store.get().chatOpen);
  };
  const toggleHost = () => {
    setFocusPanels(true);
    setHostOpen((o) => !o);
  };
  const toggleDevices = () => {
    setFocusPanels(true);
    setDevicesOpen((o) => !o);
  };
  const toggleShare = () => {
    setFocusPanels(true);
    setShareOpen((o) => !o);
  };
  const leave = () => void session.leave().then(() => navigate('#/'));

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (session.store.get().ended || document.querySelector('dialog[open]')) return;
      const action = shortcutFor({ key: e.key, ctrlKey: e.ctrlKey, altKey: e.altKey, metaKey: e.metaKey, shiftKey: e.shiftKey, repeat: e.repeat, inEditable: isEditable(e.target) });
      if (!action) return;
      e.preventDefault();
      if (action === 'mic') session.toggleMic();
      else if (action === 'cam') void session.toggleCam();
      else if (action === 'screen') void session.toggleScreen();
      else if (action === 'chat') toggleChat();
      else if (action === 'leave') leave();
      else setHelpOpen(true);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [session]);

  useEffect(() => {
    const onVisibility = () => session.setHidden(document.visibilityState === 'hidden');
    onVisibility();
    document.addEventListener('visibilitychange', onVisibility);
    return () => document.removeEventListener('visibilitychange', onVisibility);
  }, [session]);

  if (state.ended) {
    return (
      <main className={styles.ended}>
        <h1>{state.ended.reason === 'left' ? t('ended.leftTitle') : t('ended.title')}</h1>
        <p role="alert" data-testid="ended">{state.ended.text}</p>
        {state.ended.reason === 'replaced' && (
          <button type="button" className="primary" onClick={() => void session.takeOver()}>
            {t('ended.takeOver')}
          </button>
        )}
        <a href="#/">{t('common.home')}</a>
      </main>
    );
  }

  return (
    <div className={styles.room} data-connection={state.connection}>
      <header className={styles.header}>
        <h1 className={styles.brand}>Confab</h1>
        <E2eeBadge state={state} />
        <span className={styles.meta}>
          {state.locked ? (
            <span data-testid="locked">
              <Icon name="lock" /> {t('room.locked')}
            </span>
          ) : (
            <span>{t('room.open')}</span>
          )}{' '}
          · <span data-testid="connection">{t(`connection.${state.connection}`)}</span>
        </span>
        <span className={styles.tools}>
          <NotifyButton />
          <ThemeSwitch />
          <button type="button" className={styles.small} onClick={() => setHelpOpen(true)} aria-haspopup="dialog" data-testid="open-help">
            <Icon name="help" /> {t('room.shortcuts')}
          </button>
        </span>
      </header>
      {state.banner && (
        <div role="status" className={`${styles.banner} ${styles[state.banner.tone]}`} data-testid="banner">
          {state.banner.text}
        </div>
      )}
      <div className={styles.body}>
        <main className={styles.stage} aria-label={t('room.call')}>
          <CallGrid state={state} />
        </main>
        {state.chatOpen && <ChatPanel state={state} session={session} focusOnOpen={focusPanels} returnFocus={chatButton} onClose={toggleChat} />}
        {devicesOpen && <DevicesPanel state={state} session={session} focusOnOpen={focusPanels} returnFocus={devicesButton} onClose={toggleDevices} />}
        {shareOpen && canShare(state) && <SharePanel state={state} rest={services.rest} session={session} focusOnOpen={focusPanels} returnFocus={shareButton} onClose={toggleShare} />}
        {hostOpen && state.isHost && <HostPanel state={state} rest={services.rest} session={session} focusOnOpen={focusPanels} returnFocus={hostButton} onClose={toggleHost} />}
      </div>
      <Controls state={state} session={session} chatOpen={state.chatOpen} onToggleChat={toggleChat} hostOpen={hostOpen} onToggleHost={toggleHost} onLeave={leave} chatButton={chatButton} hostButton={hostButton} devicesOpen={devicesOpen} onToggleDevices={toggleDevices} devicesButton={devicesButton} shareOpen={shareOpen} onToggleShare={toggleShare} shareButton={shareButton} />
      <HelpDialog open={helpOpen} onClose={() => setHelpOpen(false)} />
    </div>
  );
}

export default function RoomPage({ roomId, prefs }: { roomId: string; prefs: MediaPrefs }) {
  const services = useServices();
  const t = services.t;
  const [session, setSession] = useState<RoomSession | null>(null);
  const [phase, setPhase] = useState(() => t('room.deriving'));
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
      const roomKey = await deriveRoomKeyMaterial(memory.passphrase, roomId);
      // Keys the room had before a removal, for the history from before it.
      const olderKeys = await Promise.all((memory.olderSecrets ?? []).map((sec) => deriveRoomKeyMaterial(sec, roomId)));
      setPhase(t('room.connecting'));
      const guest = await services.ensureSession();
      const config = await services.config();
      const fileStore = await browserFileStore();
      // After a reload this browser is an earlier member: joining needs no invite.
      if (!services.handoff || services.handoff.roomId !== roomId) await services.rest.join(roomId);
      if (!live) return;
      const handoff = services.handoff?.roomId === roomId ? services.handoff : null;
      services.handoff = null;
      created = new RoomSession({
        roomId,
        session: guest,
        myName: services.memory.displayName || prefs.name || '',
        roomKey,
        olderKeys,
        secret: memory.passphrase,
        weakKey: weak && !memory.passphrase.startsWith('k1.'),
        t,
        attention: browserAttention,
        baseTitle: document.title,
        rest: services.rest,
        memory: services.memory,
        wsUrl: wsUrl(roomId),
        wsFactory,
        iceServers: config.ice_servers,
        iceTransportPolicy: iceTransportPolicy(prefs),
        createPeerConnection,
        media: browserMedia,
        fileStore,
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
          return { ...s, local: { mic: s.local.mic, cam: s.local.cam, screen: s.local.screen, rnnoise: s.local.rnnoise ?? false }, peers: Object.fromEntries(Object.entries(s.peers).map(([k, p]) => [k, { ...p, streams: p.streams.map((x) => ({ id: x.id, label: x.label, tracks: x.stream.getTracks().length })) }])), transfers: s.transfers.map((x) => ({ ...x, blob: undefined })) };
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
    })().catch((e: unknown) => live && setError(describeError(e, t)));
    return () => {
      live = false;
      created?.dispose();
    };
  }, [roomId]);

  if (error) {
    return (
      <main className={styles.ended}>
        <h1>{t('room.cannotOpen')}</h1>
        <p role="alert" data-testid="room-error">{error}</p>
        <a href="#/">{t('common.home')}</a>
      </main>
    );
  }
  if (!session || !memory) return <p role="status" className={styles.phase}>{phase}</p>;
  return <RoomView session={session} />;
}
