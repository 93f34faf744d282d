import { useCallback, useEffect, useRef, useState, type RefObject } from 'react';
import type { RestClient } from '../../protocol/rest';
import { describeError, type Invite } from '../../protocol/types';
import { inviteFragment } from '../../state/links';
import type { RoomViewState } from '../../state/roomState';
import type { RoomSession } from '../../state/roomSession';
import { pageBase } from '../../platform/browser';
import { useT } from '../services';
import { usePanelFocus } from './usePanelFocus';
import styles from './HostPanel.module.css';

/** Host controls: invites (with or without the secret in the link), lock, kick, close. */
interface Props {
  state: RoomViewState;
  rest: RestClient;
  session: RoomSession;
  focusOnOpen: boolean;
  returnFocus: RefObject<HTMLElement | null>;
  onClose(): void;
}

export function HostPanel({ state, rest, session, focusOnOpen, returnFocus, onClose }: Props) {
  // After a removal the room has a new key: links and the shown passphrase are always the current one.
  const passphrase = session.currentSecret();
  const t = useT();
  const panelRef = useRef<HTMLElement>(null);
  usePanelFocus(panelRef, focusOnOpen, returnFocus);
  const [withSecret, setWithSecret] = useState(true);
  const [link, setLink] = useState('');
  const [invites, setInvites] = useState<Invite[]>([]);
  const [msg, setMsg] = useState<string | null>(null);
  const roomId = state.roomId;

  const refresh = useCallback(() => {
    rest.listInvites(roomId).then((r) => setInvites(r.invites), (e: unknown) => setMsg(describeError(e, t)));
  }, [rest, roomId]);
  useEffect(refresh, [refresh]);

  const act = async (what: () => Promise<unknown>) => {
    setMsg(null);
    try {
      await what();
    } catch (e) {
      setMsg(describeError(e, t));
    }
  };

  const createLink = () =>
    act(async () => {
      const inv = await rest.createInvite(roomId, {});
      const l = pageBase() + inviteFragment(roomId, inv.token ?? '', withSecret ? passphrase : null);
      setLink(l);
      await navigator.clipboard?.writeText(l).catch(() => undefined);
      refresh();
    });

  return (
    <aside ref={panelRef} tabIndex={-1} className={styles.panel} aria-label={t('host.label')} onKeyDown={(e) => e.key === 'Escape' && onClose()} data-testid="host-panel">
      <h2>{t('host.invite')}</h2>
      <label className={styles.check}>
        <input type="checkbox" data-autofocus checked={withSecret} onChange={(e) => setWithSecret(e.target.checked)} />
        <span>{t('host.secretInLink')}</span>
      </label>
      {!withSecret && (
        <p className={styles.note}>
          {t('host.sharePassphrase')} <code data-testid="passphrase">{passphrase || t('host.noPassphrase')}</code>
        </p>
      )}
      <button type="button" className="primary" onClick={() => void createLink()} data-testid="create-invite">
        {t('host.createInvite')}
      </button>
      {link && (
        <label className={styles.field}>
          <span>{t('host.inviteCopied')}</span>
          <input readOnly value={link} data-testid="invite-link" onFocus={(e) => e.target.select()} />
        </label>
      )}
      <ul className={styles.list} aria-label={t('host.inviteLinks')}>
        {invites.map((i) => (
          <li key={i.invite_id}>
            {t('host.linkUsed', { id: i.invite_id.slice(0, 6), uses: i.max_uses ? `${i.uses}/${i.max_uses}` : i.uses })}
            {i.revoked ? ` · ${t('host.revoked')}` : ''}
            {!i.revoked && (
              <button type="button" onClick={() => void act(() => rest.revokeInvite(roomId, i.invite_id)).then(refresh)}>
                {t('host.revoke')}
              </button>
            )}
          </li>
        ))}
      </ul>

      <h2>{t('host.room')}</h2>
      <button type="button" onClick={() => void act(() => rest.setLocked(roomId, !state.locked))} aria-pressed={state.locked} data-testid="toggle-lock">
        {state.locked ? t('host.unlock') : t('host.lock')}
      </button>
      <ul className={styles.list} aria-label={t('host.members')}>
        {state.members
          .filter((m) => m.membership === 'joined' && m.user_id !== state.me.userId)
          .map((m) => (
            <li key={m.user_id}>
              {state.names[m.user_id] ?? m.display_name}
              <button type="button" onClick={() => void act(() => session.kick(m.user_id))} aria-label={t('host.removeName', { name: state.names[m.user_id] ?? m.display_name })}>
                {t('host.remove')}
              </button>
            </li>
          ))}
      </ul>
      <button
        type="button"
        className={styles.danger}
        onClick={() => {
          if (confirm(t('host.closeConfirm'))) void act(() => rest.closeRoom(roomId));
        }}
      >
        {t('host.close')}
      </button>
      {msg && <p role="alert" className={styles.error}>{msg}</p>}
    </aside>
  );
}
