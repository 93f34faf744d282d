import { useRef, type RefObject } from 'react';
import type { RoomSession } from '../../state/roomSession';
import type { RoomViewState } from '../../state/roomState';
import type { DeviceKind } from '../../state/devices';
import type { MessageKey } from '../../i18n/i18n';
import { useT } from '../services';
import { usePanelFocus } from './usePanelFocus';
import { canChooseSpeaker } from '../../state/browserSupport';
import styles from './HostPanel.module.css';

/** Whether this browser can choose the speaker (HTMLMediaElement.setSinkId; not in Safari): else a note replaces the menu. */
const speakerChoice = canChooseSpeaker(typeof HTMLMediaElement === 'undefined' ? undefined : HTMLMediaElement.prototype);

const KINDS: Array<{ kind: DeviceKind; label: MessageKey; numbered: MessageKey; testId: string }> = [
  { kind: 'audioinput', label: 'devices.microphone', numbered: 'devices.micN', testId: 'device-mic' },
  { kind: 'videoinput', label: 'devices.camera', numbered: 'devices.camN', testId: 'device-cam' },
  { kind: 'audiooutput', label: 'devices.speaker', numbered: 'devices.speakerN', testId: 'device-speaker' },
];

/** Microphone, camera and speaker menus during the call. */
export function DevicesPanel({ state, session, focusOnOpen, returnFocus, onClose }: { state: RoomViewState; session: RoomSession; focusOnOpen: boolean; returnFocus: RefObject<HTMLElement | null>; onClose(): void }) {
  const t = useT();
  const panelRef = useRef<HTMLElement>(null);
  usePanelFocus(panelRef, focusOnOpen, returnFocus);
  return (
    <aside ref={panelRef} tabIndex={-1} className={styles.panel} aria-label={t('devices.title')} onKeyDown={(e) => e.key === 'Escape' && onClose()} data-testid="devices-panel">
      <h2>{t('devices.title')}</h2>
      {KINDS.map(({ kind, label, numbered, testId }, k) => {
        if (kind === 'audiooutput' && !speakerChoice) return <p key={kind} className={styles.note}>{t('devices.noSpeakerChoice')}</p>;
        const list = state.devices.filter((d) => d.kind === kind);
        return (
          <label key={kind} className={styles.field}>
            <span>{t(label)}</span>
            <select {...(k === 0 ? { 'data-autofocus': true } : {})} data-testid={testId} value={state.deviceChoice[kind]} onChange={(e) => void session.switchDevice(kind, e.target.value)}>
              <option value="">{t('devices.default')}</option>
              {list.map((d, i) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label || t(numbered, { n: i + 1 })}
                </option>
              ))}
            </select>
          </label>
        );
      })}
    </aside>
  );
}
