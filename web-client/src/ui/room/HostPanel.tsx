import { useCallback, useEffect, useState } from 'react';
import type { RestClient } from '../../protocol/rest';
import { describeError, type Invite } from '../../protocol/types';
import { inviteFragment } from '../../state/links';
import type { RoomViewState } from '../../state/roomState';
import { pageBase } from '../../platform/browser';
import styles from './HostPanel.module.css';

/** Host controls: invites (with or without the secret in the link), lock, kick, close. */
export function HostPanel({ state, rest, passphrase }: { state: RoomViewState; rest: RestClient; passphrase: string }) {
  const [withSecret, setWithSecret] = useState(true);
  const [link, setLink] = useState('');
  const [invites, setInvites] = useState<Invite[]>([]);
  const [msg, setMsg] = useState<string | null>(null);
  const roomId = state.roomId;

  const refresh = useCallback(() => {
    rest.listInvites(roomId).then((r) => setInvites(r.invites), (e: unknown) => setMsg(describeError(e)));
  }, [rest, roomId]);
  useEffect(refresh, [refresh]);

  const act = async (what: () => Promise<unknown>) => {
    setMsg(null);
    try {
      await what();
    } catch (e) {
      setMsg(describeError(e));
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
    <aside className={styles.panel} aria-label="Host controls">
      <h2>Invite</h2>
      <label className={styles.check}>
        <input type="checkbox" checked={withSecret} onChange={(e) => setWithSecret(e.target.checked)} />
        <span>Put the encryption secret in the link (after #, never sent to servers)</span>
      </label>
      {!withSecret && (
        <p className={styles.note}>
          Share the passphrase another way: <code data-testid="passphrase">{passphrase || '(none: room id)'}</code>
        </p>
      )}
      <button type="button" className="primary" onClick={() => void createLink()} data-testid="create-invite">
        Create and copy invite link
      </button>
      {link && (
        <label className={styles.field}>
          <span>Invite link (copied)</span>
          <input readOnly value={link} data-testid="invite-link" onFocus={(e) => e.target.select()} />
        </label>
      )}
      <ul className={styles.list} aria-label="Invite links">
        {invites.map((i) => (
          <li key={i.invite_id}>
            Link {i.invite_id.slice(0, 6)} · used {i.uses}
            {i.max_uses ? `/${i.max_uses}` : ''} {i.revoked ? '· revoked' : ''}
            {!i.revoked && (
              <button type="button" onClick={() => void act(() => rest.revokeInvite(roomId, i.invite_id)).then(refresh)}>
                Revoke
              </button>
            )}
          </li>
        ))}
      </ul>

      <h2>Room</h2>
      <button type="button" onClick={() => void act(() => rest.setLocked(roomId, !state.locked))} aria-pressed={state.locked} data-testid="toggle-lock">
        {state.locked ? 'Unlock the room' : 'Lock the room'}
      </button>
      <ul className={styles.list} aria-label="Members">
        {state.members
          .filter((m) => m.membership === 'joined' && m.user_id !== state.me.userId)
          .map((m) => (
            <li key={m.user_id}>
              {state.names[m.user_id] ?? m.display_name}
              <button type="button" onClick={() => void act(() => rest.kick(roomId, m.user_id))} aria-label={`Remove ${state.names[m.user_id] ?? m.display_name}`}>
                Remove
              </button>
            </li>
          ))}
      </ul>
      <button
        type="button"
        className={styles.danger}
        onClick={() => {
          if (confirm('Close the room for everyone and delete its history?')) void act(() => rest.closeRoom(roomId));
        }}
      >
        Close the room for everyone
      </button>
      {msg && <p role="alert" className={styles.error}>{msg}</p>}
    </aside>
  );
}
