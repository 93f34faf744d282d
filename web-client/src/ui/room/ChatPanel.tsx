import { useEffect, useRef, useState, type FormEvent, type RefObject } from 'react';
import { displayName, typingNames, whoIsHere, type ChatItem, type RoomViewState } from '../../state/roomState';
import type { RoomSession } from '../../state/roomSession';
import type { Translate } from '../../i18n/i18n';
import { FileCard } from './FileCard';
import { blobSource } from '../../platform/browser';
import { Icon } from '../icons';
import { useT } from '../services';
import { usePanelFocus } from './usePanelFocus';
import styles from './ChatPanel.module.css';

const time = (ts: number) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

/** A system item in words: member events name their subject, lock events are fixed sentences. */
function systemText(item: ChatItem, state: RoomViewState, t: Translate): string {
  const name = item.subject ? displayName(state, item.subject) : '';
  switch (item.text) {
    case 'joined':
      return t('member.joined', { name });
    case 'left':
      return t('member.left', { name });
    case 'removed':
      return t('member.removed', { name });
    case 'locked':
      return t('room.wasLocked');
    case 'unlocked':
      return t('room.wasUnlocked');
    case 'sharingOn':
      return t('room.sharingOn');
    case 'sharingOff':
      return t('room.sharingOff');
    case 'lobbyOn':
      return t('room.lobbyOn');
    case 'lobbyOff':
      return t('room.lobbyOff');
    case 'promoted':
      return t('member.promoted', { name });
    case 'demoted':
      return t('member.demoted', { name });
    case 'newHost':
      return t('member.newHost', { name });
    default:
      return item.text ?? '';
  }
}

/** What the live region says for an item that arrived while the user was here. */
function announcement(item: ChatItem, state: RoomViewState, t: Translate): string {
  if (item.kind === 'system') return systemText(item, state, t);
  const who = displayName(state, item.sender);
  if (item.status !== 'ok') return t('chat.announceProtected', { name: who });
  if (item.kind === 'file') return t('chat.announceFile', { name: who, file: item.file?.name ?? '' });
  return t('chat.announce', { name: who, text: item.text ?? '' });
}

function Message({ item, state, session }: { item: ChatItem; state: RoomViewState; session: RoomSession }) {
  const t = useT();
  if (item.kind === 'system') {
    return <li className={styles.system} data-seq={item.seq}>{systemText(item, state, t)} <time>{time(item.ts)}</time></li>;
  }
  const who = displayName(state, item.sender);
  return (
    <li className={styles.msg} data-seq={item.seq} data-testid="chat-message" data-status={item.status}>
      <div className={styles.meta}>
        <strong>{who}</strong> <time dateTime={new Date(item.ts).toISOString()}>{time(item.ts)}</time>
      </div>
      {item.status === 'protected' && (
        <p className={styles.protected} data-testid="protected">
          <Icon name="lock" /> {t('chat.protected')}
        </p>
      )}
      {item.status === 'refused' && <p className={styles.protected}>{t('chat.refused')}</p>}
      {item.status === 'ok' && item.text !== undefined && <p className={styles.text}>{item.text}</p>}
      {item.status === 'ok' && item.file && <FileCard offer={item.file} state={state} session={session} mine={item.sender === state.me.userId && item.deviceId === state.me.deviceId} />}
    </li>
  );
}

interface Props {
  state: RoomViewState;
  session: RoomSession;
  focusOnOpen: boolean;
  returnFocus: RefObject<HTMLElement | null>;
  onClose(): void;
}

export function ChatPanel({ state, session, focusOnOpen, returnFocus, onClose }: Props) {
  const t = useT();
  const [draft, setDraft] = useState('');
  const panelRef = useRef<HTMLElement>(null);
  const listRef = useRef<HTMLOListElement>(null);
  const fileRef = useRef<HTMLInputElement>(null);
  const typing = typingNames(state);
  const here = whoIsHere(state);
  const canShare = Object.values(state.peers).some((p) => p.filesOpen);
  usePanelFocus(panelRef, focusOnOpen, returnFocus);

  useEffect(() => {
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [state.timeline.length]);

  const send = (e: FormEvent) => {
    e.preventDefault();
    const text = draft;
    setDraft('');
    void session.sendText(text);
  };

  const pickFiles = (files: FileList | null) => {
    for (const f of files ? [...files] : []) void session.shareFile({ name: f.name, type: f.type, source: blobSource(f) });
    if (fileRef.current) fileRef.current.value = '';
  };

  // Only items that arrived live are spoken, one at a time: the history replayed on entering (or
  // after a reconnect) is in the list for reading, not read out as a flood.
  const live = state.lastLive;
  return (
    <aside ref={panelRef} tabIndex={-1} className={styles.panel} aria-label={t('chat.label')} onKeyDown={(e) => e.key === 'Escape' && onClose()} data-testid="chat-panel">
      <details className={styles.people} open>
        <summary>{t('chat.hereNow', { n: here.length })}</summary>
        <ul data-testid="presence">
          {here.map((p) => (
            <li key={p.userId} data-testid="presence-entry">
              {p.name}
              {p.userId === state.me.userId ? ` ${t('chat.you')}` : ''}
              {p.isHost ? ` · ${t('chat.host')}` : ''} · {t(p.devices === 1 ? 'chat.oneDevice' : 'chat.devices', { n: p.devices })}
            </li>
          ))}
        </ul>
      </details>
      <ol ref={listRef} className={styles.list} aria-label={t('chat.messages')} tabIndex={0}>
        {state.timeline.map((item) => (
          <Message key={item.seq} item={item} state={state} session={session} />
        ))}
      </ol>
      <div className="visually-hidden" aria-live="polite" data-testid="chat-live">
        {live && live.sender !== state.me.userId ? announcement(live, state, t) : ''}
      </div>
      <p className={styles.typing} data-testid="typing">
        {typing.length ? t(typing.length === 1 ? 'chat.typingOne' : 'chat.typingMany', { names: typing.join(', ') }) : ''}
      </p>
      <form className={styles.compose} onSubmit={send}>
        <label className="visually-hidden" htmlFor="chat-input">
          {t('chat.message')}
        </label>
        <input
          id="chat-input"
          data-autofocus
          value={draft}
          onChange={(e) => {
            setDraft(e.target.value);
            session.setTyping(e.target.value.length > 0);
          }}
          placeholder={t('chat.placeholder')}
          autoComplete="off"
        />
        <button type="submit" disabled={!draft.trim()}>
          {t('chat.send')}
        </button>
        <input ref={fileRef} type="file" multiple className="visually-hidden" id="file-input" onChange={(e) => pickFiles(e.target.files)} aria-label={t('chat.shareFiles')} disabled={!canShare} tabIndex={-1} />
        <button type="button" onClick={() => fileRef.current?.click()} disabled={!canShare} title={canShare ? t('chat.shareTitle') : t('chat.waitingPeer')}>
          <Icon name="paperclip" /> {t('chat.shareFile')}
        </button>
      </form>
    </aside>
  );
}
