import { useEffect, useMemo } from 'react';
import type { FileOffer } from '../../files/chunks';
import type { RoomSession } from '../../state/roomSession';
import { displayName, type RoomViewState } from '../../state/roomState';
import { Icon } from '../icons';
import { useT } from '../services';
import styles from './FileCard.module.css';

function size(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

/** A shared file: inline image or download link once verified, progress on both sides meanwhile. */
export function FileCard({ offer, state, session, mine }: { offer: FileOffer; state: RoomViewState; session: RoomSession; mine: boolean }) {
  const t = useT();
  const view = state.transfers.find((t) => t.offer.id === offer.id);
  const data = view?.direction === 'in' && view.state === 'done' ? view.data : undefined;
  const url = useMemo(() => (data ? URL.createObjectURL(new Blob([data as BlobPart], { type: offer.mime || 'application/octet-stream' })) : null), [data, offer.mime]);
  useEffect(() => () => void (url && URL.revokeObjectURL(url)), [url]);
  const isImage = /^image\/(png|jpeg|gif|webp|avif|bmp)$/.test(offer.mime);

  return (
    <div className={styles.card} data-testid="file-card" data-file-id={offer.id} data-sha256={offer.sha256} data-state={view?.direction === 'in' ? view.state : mine ? 'mine' : 'unknown'}>
      <div className={styles.head}>
        <Icon name="paperclip" /> <span className={styles.name}>{offer.name}</span> <span className={styles.size}>{size(offer.size)}</span>
      </div>
      {view?.direction === 'in' && (
        <>
          {['requested', 'receiving', 'verifying'].includes(view.state) && (
            <progress max={1} value={view.progress} aria-label={t('file.receiving', { name: offer.name })} />
          )}
          {view.state === 'offered' && (
            <button type="button" onClick={() => session.transfers.request(offer.id)}>
              {t('file.receive')}
            </button>
          )}
          {view.state === 'corrupt' && <p role="alert" className={styles.bad}>{t('file.corrupt')}</p>}
          {(view.state === 'unavailable' || view.state === 'failed') && (
            <p className={styles.bad}>
              {view.error ?? t('file.unavailable')}{' '}
              <button type="button" onClick={() => session.transfers.request(offer.id)}>{t('file.retry')}</button>
            </p>
          )}
          {url && isImage && <img src={url} alt={offer.name} className={styles.image} />}
          {url && (
            <a href={url} download={offer.name} data-testid="file-download">
              {t('file.save', { name: offer.name })}
            </a>
          )}
        </>
      )}
      {view?.direction === 'out' && (
        <ul className={styles.peers} aria-label="Delivery">
          {Object.entries(view.peers).length === 0 && <li>{t('file.offered')}</li>}
          {Object.entries(view.peers).map(([peer, p]) => (
            <li key={peer}>
              {displayName(state, peer.slice(0, peer.lastIndexOf('|')))}: {t(`file.out.${p.state}`)}{' '}
              <progress max={1} value={p.progress} aria-label={t('file.sending', { name: offer.name })} />
            </li>
          ))}
        </ul>
      )}
      {!view && mine && <p className={styles.size}>{t('file.earlier')}</p>}
    </div>
  );
}
