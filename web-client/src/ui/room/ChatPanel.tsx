import { useEffect, useRef, useState, type FormEvent } from 'react';
import { displayName, typingNames, whoIsHere, type ChatItem, type RoomViewState } from '../../state/roomState';
import type { RoomSession } from '../../state/roomSession';
import { FileCard } from './FileCard';
import { blobSource } from '../../platform/browser';
import styles from './ChatPanel.module.css';

const time = (ts: number) => new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

function Message({ item, state, session }: { item: ChatItem; state: RoomViewState; session: RoomSession }) {
  if (item.kind === 'system') {
    const text = item.subject ? `${displayName(state, item.subject)} ${item.text ?? ''}` : item.text;
    return <li className={styles.system} data-seq={item.seq}>{text} <time>{time(item.ts)}</time></li>;
  }
  const who = displayName(state, item.sender);
  return (
    <li className={styles.msg} data-seq={item.seq} data-testid="chat-message" data-status={item.status}>
      <div className={styles.meta}>
        <strong>{who}</strong> <time dateTime={new Date(item.ts).toISOString()}>{time(item.ts)}</time>
      </div>
      {item.status === 'protected' && (
        <p className={styles.protected} data-testid="protected">
          <span aria-hidden="true">🔒</span> protected — wrong passphrase?
        </p>
      )}
      {item.status === 'refused' && <p className={styles.protected}>A message that was not end-to-end encrypted was refused.</p>}
      {item.status === 'ok' && item.text !== undefined && <p className={styles.text}>{item.text}</p>}
      {item.status === 'ok' && item.file && <FileCard offer={item.file} state={state} session={session} mine={item.sender === state.me.userId && item.deviceId === state.me.deviceId} />}
    </li>
  );
}

export function ChatPanel({ state, session }: { state: RoomViewState; session: RoomSession }) {
  const [draft, setDraft] = useState('');
  const listRef = useRef<HTMLOListElement>(null);
  const fileRef = useRef<HTMLInputElement>(null);
  const typing = typingNames(state);
  const here = whoIsHere(state);
  const canShare = Object.values(state.peers).some((p) => p.filesOpen);

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

  return (
    <aside className={styles.panel} aria-label="Chat">
      <details className={styles.people} open>
        <summary>Here now ({here.length})</summary>
        <ul data-testid="presence">
          {here.map((p) => (
            <li key={p.userId} data-testid="presence-entry">
              {p.name}
              {p.userId === state.me.userId ? ' (you)' : ''}
              {p.isHost ? ' · host' : ''} · {p.devices} {p.devices === 1 ? 'device' : 'devices'}
            </li>
          ))}
        </ul>
      </details>
      <ol ref={listRef} className={styles.list} aria-live="polite" aria-label="Messages">
        {state.timeline.map((item) => (
          <Message key={item.seq} item={item} state={state} session={session} />
        ))}
      </ol>
      <p className={styles.typing} data-testid="typing" aria-live="polite">
        {typing.length ? `${typing.join(', ')} ${typing.length === 1 ? 'is' : 'are'} typing…` : ''}
      </p>
      <form className={styles.compose} onSubmit={send}>
        <label className="visually-hidden" htmlFor="chat-input">
          Message
        </label>
        <input
          id="chat-input"
          value={draft}
          onChange={(e) => {
            setDraft(e.target.value);
            session.setTyping(e.target.value.length > 0);
          }}
          placeholder="Encrypted message"
          autoComplete="off"
        />
        <button type="submit" disabled={!draft.trim()}>
          Send
        </button>
        <input ref={fileRef} type="file" multiple className="visually-hidden" id="file-input" onChange={(e) => pickFiles(e.target.files)} aria-label="Share files" disabled={!canShare} />
        <button type="button" onClick={() => fileRef.current?.click()} disabled={!canShare} title={canShare ? 'Share a file peer to peer' : 'Waiting for a peer connection'}>
          Share file
        </button>
      </form>
    </aside>
  );
}
