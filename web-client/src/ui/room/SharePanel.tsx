import { useEffect, useRef, useState, type RefObject } from 'react';
import type { RestClient } from '../../protocol/rest';
import { describeError } from '../../protocol/types';
import { inviteFragment } from '../../state/links';
import { qrModules, qrPath } from '../../state/qr';
import type { RoomViewState } from '../../state/roomState';
import type { RoomSession } from '../../state/roomSession';
import { pageBase } from '../../platform/browser';
import { useT } from '../services';
import { usePanelFocus } from './usePanelFocus';
import styles from './HostPanel.module.css';

interface Props {
  state: RoomViewState;
  rest: RestClient;
  session: RoomSession;
  focusOnOpen: boolean;
  returnFocus: RefObject<HTMLElement | null>;
  onClose(): void;
}

/** The invite link as a QR code, drawn once the library has loaded (it is not in the first bundle). */
function QrCode({ text }: { text: string }) {
  const t = useT();
  const [drawn, setDrawn] = useState<{ text: string; path: string; size: number; modules: number } | null>(null);
  useEffect(() => {
    let live = true;
    void qrModules(text).then((m) => live && setDrawn({ text, ...qrPath(m), modules: m.length }));
    return () => {
      live = false;
    };
  }, [text]);
  if (!drawn || drawn.text !== text) return <p className={styles.note}>{t('share.qrLoading')}</p>;
  return (
    <svg className={styles.qr} viewBox={`0 0 ${drawn.size} ${drawn.size}`} role="img" aria-label={t('share.qr')} data-testid="share-qr" data-modules={drawn.modules} shapeRendering="crispEdges">
      <rect width={drawn.size} height={drawn.size} fill="#fff" />
      <path d={drawn.path} fill="#000" />
    </svg>
  );
}

/**
 * Invite people: for the host, and for everyone while the host lets guests share. Makes an invite
 * link (with the room's current secret in its fragment, unless unticked), shows it with a copy
 * button and as a QR code for a phone to scan.
 */
export function SharePanel({ state, rest, session, focusOnOpen, returnFocus, onClose }: Props) {
  const t = useT();
  const panelRef = useRef<HTMLElement>(null);
  usePanelFocus(panelRef, focusOnOpen, returnFocus);
  const [withSecret, setWithSecret] = useState(true);
  const [link, setLink] = useState('');
  const [copied, setCopied] = useState(false);
  const [msg, setMsg] = useState<string | null>(null);
  const passphrase = session.currentSecret();

  const make = async () => {
    setMsg(null);
    setCopied(false);
    try {
      const inv = await rest.createInvite(state.roomId, {});
      setLink(pageBase() + inviteFragment(state.roomId, inv.token ?? '', withSecret ? session.currentSecret() : null));
    } catch (e) {
      setMsg(describeError(e, t));
    }
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(link);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };

  return (
    <aside ref={panelRef} tabIndex={-1} className={styles.panel} aria-label={t('share.label')} onKeyDown={(e) => e.key === 'Escape' && onClose()} data-testid="share-panel">
      <h2>{t('share.label')}</h2>
      <p className={styles.note}>{t('share.lead')}</p>
      <label className={styles.check}>
        <input type="checkbox" data-autofocus checked={withSecret} onChange={(e) => setWithSecret(e.target.checked)} />
        <span>{t('host.secretInLink')}</span>
      </label>
      {!withSecret && (
        <p className={styles.note}>
          {t('host.sharePassphrase')} <code>{passphrase || t('host.noPassphrase')}</code>
        </p>
      )}
      <button type="button" className="primary" onClick={() => void make()} data-testid="share-make">
        {t('share.make')}
      </button>
      {link && (
        <>
          <label className={styles.field}>
            <span>{t('share.link')}</span>
            <input readOnly value={link} data-testid="share-link" onFocus={(e) => e.target.select()} />
          </label>
          <button type="button" onClick={() => void copy()} data-testid="share-copy">
            {copied ? t('share.copied') : t('share.copy')}
          </button>
          <QrCode text={link} />
        </>
      )}
      {msg && <p role="alert" className={styles.error}>{msg}</p>}
    </aside>
  );
}
