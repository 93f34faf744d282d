import { useEffect, useMemo } from 'react';
import type { FileOffer } from '../../files/chunks';
import type { RateView } from '../../files/rate';
import type { RoomSession } from '../../state/roomSession';
import { displayName, type RoomViewState } from '../../state/roomState';
import type { Translate } from '../../i18n/i18n';
import { Icon } from '../icons';
import { useT } from '../services';
import styles from './FileCard.module.css';

function size(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

/** "12.0 MB of 200.0 MB, 25.3 MB/s, 8 s left" */
function progressText(t: Translate, offer: FileOffer, progress: number, rate: RateView): string {
  const done = t('file.progress', { done: size(Math.round(progress * offer.size)), total: size(offer.size) });
  if (rate.bytesPerSecond === null || rate.secondsLeft === null) return done;
  const left = rate.secondsLeft < 90 ? t('file.seconds', { n: rate.secondsLeft }) : t('file.minutes', { n: Math.ceil(rate.secondsLeft / 60) });
  return `${done}, ${t('file.speed', { speed: size(Math.round(rate.bytesPerSecond)), left })}`;
}

/** A shared file: inline image or download link once verified, progress with speed and time left on both sides meanwhile. */
export function FileCard({ offer, state, session, mine }: { offer: FileOffer; state: RoomViewState; session: RoomSession; mine: boolean }) {
  const t = useT();
  const view = state.transfers.find((x) => x.offer.id === offer.id);
  const blob = view?.direction === 'in' && view.state === 'done' ? view.blob : undefined;
  // The blob is the verified file itself (disk-backed from OPFS): the URL points at it, no copy.
  const url = useMemo(() => (blob ? URL.createObjectURL(blob.type ? blob : blob.slice(0, blob.size, offer.mime || 'application/octet-stream')) : null), [blob, offer.mime]);
  useEffect(() => () => void (url && URL.revokeObjectURL(url)), [url]);
  const isImage = /^image\/(png|jpeg|gif|webp|avif|bmp)$/.test(offer.mime);
  const receiving = view?.direction === 'in' && ['requested', 'receiving', 'verifying'].includes(view.state);

  return (
    <div className={styles.card} data-testid="file-card" data-file-id={offer.id} data-sha256={offer.sha256} data-state={view?.direction === 'in' ? view.state : mine ? 'mine' : 'unknown'}>
      <div className={styles.head}>
        <Icon name="paperclip" /> <span className={styles.name}>{offer.name}</span> <span className={styles.size}>{size(offer.size)}</span>
      </div>
      {view?.direction === 'in' && (
        <>
          {receiving && (
            <>
              <progress max={1} value={view.progress} aria-label={t('file.receiving', { name: offer.name })} />
              <p className={styles.size} data-testid="file-progress">{progressText(t, offer, view.progress, view)}</p>
              <button type="button" onClick={() => session.transfers.cancel(offer.id)} aria-label={t('file.cancelFor', { name: offer.name })} data-testid="file-cancel">
                {t('file.cancel')}
              </button>
            </>
          )}
          {view.state === 'offered' && (
            <button type="button" onClick={() => session.transfers.request(offer.id)}>
              {t('file.receive')}
            </button>
          )}
          {view.state === 'corrupt' && <p role="alert" className={styles.bad}>{t('file.corrupt')}</p>}
          {(view.state === 'unavailable' || view.state === 'failed' || view.state === 'cancelled') && (
            <p className={styles.bad} data-testid="file-problem">
              {view.problem ? t(`file.problem.${view.problem}`, { limit: size(session.transfers.maxBytes ?? 0) }) : view.state === 'cancelled' ? t('file.cancelled') : t('file.unavailable')}{' '}
              {view.problem !== 'sender-gone' && view.problem !== 'sender-stopped' && view.problem !== 'too-large' && (
                <button type="button" onClick={() => session.transfers.request(offer.id)}>{t('file.retry')}</button>
              )}
            </p>
          )}
          {view.state === 'requested' && view.problem && <p className={styles.size}>{t(`file.problem.${view.problem}`)}</p>}
          {url && isImage && <img src={url} alt={offer.name} className={styles.image} />}
          {url && (
            <a href={url} download={offer.name} data-testid="file-download">
              {t('file.save', { name: offer.name })}
            </a>
          )}
        </>
      )}
      {view?.direction === 'out' && (
        <>
          <ul className={styles.peers} aria-label={t('file.delivery')}>
            {Object.entries(view.peers).length === 0 && <li>{t('file.offered')}</li>}
            {Object.entries(view.peers).map(([peer, p]) => (
              <li key={peer} data-testid="file-delivery" data-state={p.state}>
                {displayName(state, peer.slice(0, peer.lastIndexOf('|')))}: {t(`file.out.${p.state}`)}{' '}
                <progress max={1} value={p.progress} aria-label={t('file.sending', { name: offer.name })} />
                {p.state === 'sending' && <span className={styles.size}> {progressText(t, offer, p.progress, p)}</span>}
              </li>
            ))}
          </ul>
          {view.sharing ? (
            <button type="button" onClick={() => session.transfers.stopSharing(offer.id)} data-testid="file-stop">
              {t('file.stopSharing')}
            </button>
          ) : (
            <p className={styles.size}>{t('file.stopped')}</p>
          )}
        </>
      )}
      {!view && mine && <p className={styles.size}>{t('file.earlier')}</p>}
    </div>
  );
}
