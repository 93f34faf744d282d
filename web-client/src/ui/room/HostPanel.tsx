import { useCallback, useEffect, useRef, useState, type RefObject } from 'react';
import type { RestClient } from '../../protocol/rest';
import { describeError, type Invite, type Member } from '../../protocol/types';
import { inviteFragment } from '../../state/links';
import { displayName, waitingKnocks, type RoomViewState } from '../../state/roomState';
import type { RoomSession } from '../../state/roomSession';
import { pageBase } from '../../platform/browser';
import { useT } from '../services';
import { usePanelFocus } from './usePanelFocus';
import styles from './HostPanel.module.css';

/**
 * Host controls: invites (with or without the secret in the link; those guests made are named),
 * whether guests may share invite links, lock, kick (of a member in the
 * room, or one who left, kept out), close. After a kick the panel says whether the link the member
 * joined with was revoked, and offers a fresh link in one click.
 */
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
  const [removal, setRemoval] = useState<{ name: string; revoked: boolean; link?: string } | null>(null);
  const roomId = state.roomId;
  const nameOf = (m: Member) => state.names[m.user_id] ?? m.display_name;
  const nameOfUser = (userId: string) => displayName(state, userId);

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

  const newLink = async (): Promise<string> => {
    const inv = await rest.createInvite(roomId, {});
    // The secret in force now: a kick has just replaced the room key.
    const l = pageBase() + inviteFragment(roomId, inv.token ?? '', withSecret ? session.currentSecret() : null);
    await navigator.clipboard?.writeText(l).catch(() => undefined);
    refresh();
    return l;
  };
  const createLink = () => act(async () => setLink(await newLink()));
  const linkAfterRemoval = () =>
    act(async () => {
      const l = await newLink();
      setRemoval((r) => r && { ...r, link: l });
    });
  const remove = (m: Member) =>
    act(async () => {
      setRemoval(null);
      const result = await session.kick(m.user_id);
      setRemoval({ name: nameOf(m), revoked: result.invite_revoked });
      refresh();
    });
  const others = state.members.filter((m) => m.user_id !== state.me.userId && m.user_id !== state.host);
  const iAmTheHost = state.role === 'host';
  // A co-host removes guests; the host removes anyone but themselves.
  const mayRemove = (m: Member) => iAmTheHost || m.role === 'guest';
  const knocks = waitingKnocks(state, Date.now());
  const answer = (userId: string, admit: boolean) => act(() => rest.answerKnock(roomId, userId, admit));

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
            {i.created_by && i.created_by !== state.me.userId ? ` · ${t('host.madeBy', { name: nameOfUser(i.created_by) })}` : ''}
            {i.revoked ? ` · ${t('host.revoked')}` : ''}
            {!i.revoked && (
              <button type="button" onClick={() => void act(() => rest.revokeInvite(roomId, i.invite_id)).then(refresh)}>
                {t('host.revoke')}
              </button>
            )}
          </li>
        ))}
      </ul>

      {knocks.length > 0 && (
        <>
          <h2>{t('host.lobby')}</h2>
          <ul className={styles.list} aria-label={t('host.knocking')} data-testid="knocks">
            {knocks.map((k) => (
              <li key={k.userId}>
                {k.name}
                <span>
                  <button type="button" className="primary" onClick={() => void answer(k.userId, true)} aria-label={t('host.admitName', { name: k.name })} data-testid="knock-admit">
                    {t('host.admit')}
                  </button>{' '}
                  <button type="button" onClick={() => void answer(k.userId, false)} aria-label={t('host.refuseName', { name: k.name })} data-testid="knock-refuse">
                    {t('host.refuse')}
                  </button>
                </span>
              </li>
            ))}
          </ul>
        </>
      )}
      <h2>{t('host.room')}</h2>
      <label className={styles.check}>
        <input
          type="checkbox"
          checked={state.guestsMayShare}
          onChange={(e) => void act(() => rest.setSettings(roomId, { guests_may_share: e.target.checked }))}
          data-testid="toggle-guests-share"
        />
        <span>{t('host.guestsMayShare')}</span>
      </label>
      <label className={styles.check}>
        <input type="checkbox" checked={state.lobby} onChange={(e) => void act(() => rest.setSettings(roomId, { lobby: e.target.checked }))} data-testid="toggle-lobby" />
        <span>{t('host.lobbySetting')}</span>
      </label>
      <button type="button" onClick={() => void act(() => rest.setLocked(roomId, !state.locked))} aria-pressed={state.locked} data-testid="toggle-lock">
        {state.locked ? t('host.unlock') : t('host.lock')}
      </button>
      <ul className={styles.list} aria-label={t('host.members')}>
        {others
          .filter((m) => m.membership === 'joined')
          .map((m) => (
            <li key={m.user_id}>
              {nameOf(m)}
              {m.role === 'cohost' ? ` · ${t('host.cohost')}` : ''}
              <span>
                {iAmTheHost && (
                  <button
                    type="button"
                    onClick={() => void act(() => rest.setRole(roomId, m.user_id, m.role === 'cohost' ? 'guest' : 'cohost'))}
                    aria-label={t(m.role === 'cohost' ? 'host.demoteName' : 'host.promoteName', { name: nameOf(m) })}
                  >
                    {m.role === 'cohost' ? t('host.demote') : t('host.promote')}
                  </button>
                )}{' '}
                {mayRemove(m) && (
                  <button type="button" onClick={() => void remove(m)} aria-label={t('host.removeName', { name: nameOf(m) })}>
                    {t('host.remove')}
                  </button>
                )}
              </span>
            </li>
          ))}
      </ul>
      {others.some((m) => m.membership === 'left') && (
        <ul className={styles.list} aria-label={t('host.left')}>
          {others
            .filter((m) => m.membership === 'left')
            .map((m) => (
              <li key={m.user_id}>
                {nameOf(m)}
                <button type="button" onClick={() => void remove(m)} aria-label={t('host.keepOutName', { name: nameOf(m) })}>
                  {t('host.keepOut')}
                </button>
              </li>
            ))}
        </ul>
      )}
      {removal && (
        <div role="status" className={styles.notice} data-testid="removal-notice">
          <p>{t(removal.revoked ? 'host.removedRevoked' : 'host.removedNoLink', { name: removal.name })}</p>
          {removal.revoked && !removal.link && (
            <button type="button" className="primary" onClick={() => void linkAfterRemoval()} data-testid="new-invite-after-removal">
              {t('host.newLink')}
            </button>
          )}
          {removal.link && (
            <label className={styles.field}>
              <span>{t('host.inviteCopied')}</span>
              <input readOnly value={removal.link} data-testid="new-invite-link" onFocus={(e) => e.target.select()} />
            </label>
          )}
        </div>
      )}
      {iAmTheHost && (
        <button
          type="button"
          className={styles.danger}
          onClick={() => {
            if (confirm(t('host.closeConfirm'))) void act(() => rest.closeRoom(roomId));
          }}
        >
          {t('host.close')}
        </button>
      )}
      {msg && <p role="alert" className={styles.error}>{msg}</p>}
    </aside>
  );
}
