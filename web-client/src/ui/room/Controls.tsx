import type { RefObject } from 'react';
import type { RoomSession } from '../../state/roomSession';
import { canShare, waitingKnocks, type RoomViewState } from '../../state/roomState';
import { Icon } from '../icons';
import { useT } from '../services';
import styles from './Controls.module.css';

interface Props {
  state: RoomViewState;
  session: RoomSession;
  chatOpen: boolean;
  onToggleChat(): void;
  hostOpen: boolean;
  onToggleHost(): void;
  onLeave(): void;
  chatButton: RefObject<HTMLButtonElement | null>;
  hostButton: RefObject<HTMLButtonElement | null>;
  devicesOpen: boolean;
  onToggleDevices(): void;
  devicesButton: RefObject<HTMLButtonElement | null>;
  shareOpen: boolean;
  onToggleShare(): void;
  shareButton: RefObject<HTMLButtonElement | null>;
}

/** The call's control bar: every button has a text caption beside its icon, and its shortcut in the tooltip. */
export function Controls({ state, session, chatOpen, onToggleChat, hostOpen, onToggleHost, onLeave, chatButton, hostButton, devicesOpen, onToggleDevices, devicesButton, shareOpen, onToggleShare, shareButton }: Props) {
  const t = useT();
  const l = state.local;
  return (
    <nav className={styles.bar} aria-label={t('controls.label')}>
      <button type="button" onClick={() => session.toggleMic()} aria-pressed={l.mic} data-testid="toggle-mic" aria-keyshortcuts="M" title={t('controls.shortcut', { key: 'M' })}>
        <Icon name={l.mic ? 'mic' : 'micOff'} /> {l.mic ? t('controls.mute') : t('controls.unmute')}
      </button>
      <button type="button" onClick={() => void session.toggleCam()} aria-pressed={l.cam} data-testid="toggle-cam" aria-keyshortcuts="V" title={t('controls.shortcut', { key: 'V' })}>
        <Icon name={l.cam ? 'camera' : 'cameraOff'} /> {l.cam ? t('controls.camOff') : t('controls.camOn')}
      </button>
      <button type="button" onClick={() => void session.toggleScreen()} aria-pressed={l.screen} data-testid="toggle-screen" aria-keyshortcuts="D" title={t('controls.shortcut', { key: 'D' })}>
        <Icon name="screen" /> {l.screen ? t('controls.stopShare') : t('controls.share')}
      </button>
      <button ref={devicesButton} type="button" onClick={onToggleDevices} aria-pressed={devicesOpen} aria-expanded={devicesOpen} data-testid="toggle-devices">
        <Icon name="settings" /> {t('controls.devices')}
      </button>
      <button ref={chatButton} type="button" onClick={onToggleChat} aria-pressed={chatOpen} aria-expanded={chatOpen} data-testid="toggle-chat" aria-keyshortcuts="C" title={t('controls.shortcut', { key: 'C' })}>
        <Icon name="chat" /> {t('controls.chat')}
        {state.unread > 0 && (
          <span className={styles.unread} data-testid="unread" aria-label={t('controls.unread', { n: state.unread })}>
            {state.unread}
          </span>
        )}
      </button>
      {canShare(state) && (
        <button ref={shareButton} type="button" onClick={onToggleShare} aria-pressed={shareOpen} aria-expanded={shareOpen} data-testid="toggle-share">
          <Icon name="share" /> {t('controls.invite')}
        </button>
      )}
      {state.isHost && (
        <button ref={hostButton} type="button" onClick={onToggleHost} aria-pressed={hostOpen} aria-expanded={hostOpen} data-testid="toggle-host">
          <Icon name="shield" /> {t('controls.host')}
          {waitingKnocks(state, Date.now()).length > 0 && (
            <span className={styles.unread} data-testid="knock-count" aria-label={t('controls.knocking', { n: waitingKnocks(state, Date.now()).length })}>
              {waitingKnocks(state, Date.now()).length}
            </span>
          )}
        </button>
      )}
      <button type="button" className={styles.leave} onClick={onLeave} aria-keyshortcuts="Shift+L" title={t('controls.shortcut', { key: 'Shift+L' })}>
        <Icon name="leave" /> {t('controls.leave')}
      </button>
    </nav>
  );
}
