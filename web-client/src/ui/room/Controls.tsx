import type { RoomSession } from '../../state/roomSession';
import type { RoomViewState } from '../../state/roomState';
import styles from './Controls.module.css';

interface Props {
  state: RoomViewState;
  session: RoomSession;
  chatOpen: boolean;
  onToggleChat(): void;
  hostOpen: boolean;
  onToggleHost(): void;
  onLeave(): void;
}

/** The call's control bar: every button has a text caption, not just an icon. */
export function Controls({ state, session, chatOpen, onToggleChat, hostOpen, onToggleHost, onLeave }: Props) {
  const l = state.local;
  return (
    <nav className={styles.bar} aria-label="Call controls">
      <button type="button" onClick={() => session.toggleMic()} aria-pressed={l.mic} data-testid="toggle-mic">
        <span aria-hidden="true">{l.mic ? '🎙️' : '🔇'}</span> {l.mic ? 'Mute' : 'Unmute'}
      </button>
      <button type="button" onClick={() => void session.toggleCam()} aria-pressed={l.cam} data-testid="toggle-cam">
        <span aria-hidden="true">📷</span> {l.cam ? 'Camera off' : 'Camera on'}
      </button>
      <button type="button" onClick={() => void session.toggleScreen()} aria-pressed={l.screen} data-testid="toggle-screen">
        <span aria-hidden="true">🖥️</span> {l.screen ? 'Stop sharing' : 'Share screen'}
      </button>
      <button type="button" onClick={onToggleChat} aria-pressed={chatOpen} aria-expanded={chatOpen} data-testid="toggle-chat">
        <span aria-hidden="true">💬</span> Chat
        {state.unread > 0 && (
          <span className={styles.unread} data-testid="unread" aria-label={`${state.unread} unread`}>
            {state.unread}
          </span>
        )}
      </button>
      {state.isHost && (
        <button type="button" onClick={onToggleHost} aria-pressed={hostOpen} aria-expanded={hostOpen} data-testid="toggle-host">
          <span aria-hidden="true">🛡️</span> Host
        </button>
      )}
      <button type="button" className={styles.leave} onClick={onLeave}>
        Leave
      </button>
    </nav>
  );
}
