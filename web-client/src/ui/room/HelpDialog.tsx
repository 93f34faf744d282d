import { useEffect, useRef } from 'react';
import { SHORTCUTS } from '../../state/shortcuts';
import { useT } from '../services';
import styles from './HelpDialog.module.css';

/** The keyboard shortcuts, in a modal dialog (opened with `?`); the browser returns the focus on close. */
export function HelpDialog({ open, onClose }: { open: boolean; onClose(): void }) {
  const t = useT();
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} className={styles.dialog} onClose={onClose} aria-labelledby="help-title" data-testid="help-dialog">
      <h2 id="help-title">{t('help.title')}</h2>
      <dl className={styles.list}>
        {SHORTCUTS.map((s) => (
          <div key={s.action} className={styles.row}>
            <dt>
              <kbd>{s.keys}</kbd>
            </dt>
            <dd>{t(`shortcut.${s.action}`)}</dd>
          </div>
        ))}
      </dl>
      <p className={styles.note}>{t('help.note')}</p>
      <button type="button" onClick={onClose} autoFocus>
        {t('common.close')}
      </button>
    </dialog>
  );
}
