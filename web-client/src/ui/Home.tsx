import { useEffect, useState, type FormEvent } from 'react';
import { useServices, useT } from './services';
import { ThemeSwitch } from './ThemeSwitch';
import { navigate } from './useHashRoute';
import { carriedQuery, inviteFragment, roomFragment, routeFromPastedLink, type MediaPrefs } from '../state/links';
import { randomSecret } from '../crypto/e2ee';
import { describeError, type RoomSummary } from '../protocol/types';
import styles from './Home.module.css';

export function Home({ prefs }: { prefs: MediaPrefs }) {
  const services = useServices();
  const t = useT();
  const [name, setName] = useState(() => services.memory.displayName);
  const [shareName, setShareName] = useState(() => services.memory.shareName);
  const [link, setLink] = useState('');
  const [rooms, setRooms] = useState<RoomSummary[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (!services.memory.session) {
      setRooms([]);
      return;
    }
    let live = true;
    services
      .ensureSession()
      .then(() => services.rest.listRooms())
      .then((r) => {
        // What the server no longer lists has expired or was deleted: its passphrase goes too.
        services.memory.keepOnly(r.rooms.map((room) => room.room_id));
        if (live) setRooms(r.rooms);
      })
      .catch((e: unknown) => live && (setRooms([]), setError(describeError(e))));
    return () => {
      live = false;
    };
  }, [services]);

  const saveName = (v: string) => {
    setName(v);
    services.memory.displayName = v.trim();
  };

  const toggleShare = async (v: boolean) => {
    setShareName(v);
    services.memory.shareName = v;
    // The server label is fixed when the guest session is created; start a new one if nothing depends on it.
    if (services.memory.session && Object.keys(services.memory.rooms()).length === 0) await services.resetSession();
  };

  const create = async () => {
    setBusy(true);
    setError(null);
    try {
      await services.ensureSession();
      const room = await services.rest.createRoom();
      services.memory.rememberRoom(room.room_id, { passphrase: randomSecret(), joinedSeq: room.latest_seq });
      navigate(inviteFragment(room.room_id, null, null) + carriedQuery(prefs));
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(false);
    }
  };

  const join = (e: FormEvent) => {
    e.preventDefault();
    const r = routeFromPastedLink(link);
    if (!r) {
      setError(t('home.notALink'));
      return;
    }
    location.hash = link.slice(link.indexOf('#'));
  };

  return (
    <main className={styles.home}>
      <div className={styles.top}>
        <h1 className={styles.title}>Confab</h1>
        <ThemeSwitch />
      </div>
      <p className={styles.lead}>{t('home.lead')}</p>

      <section className={styles.card} aria-labelledby="you">
        <h2 id="you">{t('home.you')}</h2>
        <label className={styles.field}>
          <span>{t('home.displayName')}</span>
          <input value={name} onChange={(e) => saveName(e.target.value)} maxLength={64} autoComplete="nickname" placeholder={t('common.namePlaceholder')} />
        </label>
        <label className={styles.check}>
          <input type="checkbox" checked={shareName} onChange={(e) => void toggleShare(e.target.checked)} />
          <span>{t('home.shareName')}</span>
        </label>
      </section>

      <section className={styles.card} aria-labelledby="start">
        <h2 id="start">{t('home.start')}</h2>
        <button type="button" className="primary" onClick={() => void create()} disabled={busy}>
          {busy ? t('home.creating') : t('home.create')}
        </button>
        <form onSubmit={join} className={styles.joinForm}>
          <label className={styles.field}>
            <span>{t('home.inviteLink')}</span>
            <input value={link} onChange={(e) => setLink(e.target.value)} placeholder={t('home.pasteLink')} />
          </label>
          <button type="submit" disabled={!link.trim()}>
            {t('common.join')}
          </button>
        </form>
        {error && (
          <p role="alert" className={styles.error}>
            {error}
          </p>
        )}
      </section>

      <section className={styles.card} aria-labelledby="rooms">
        <h2 id="rooms">{t('home.yourRooms')}</h2>
        {rooms === null && <p role="status">{t('common.loading')}</p>}
        {rooms?.length === 0 && <p className={styles.muted}>{t('home.noRooms')}</p>}
        <ul className={styles.rooms}>
          {rooms?.map((r) => (
            <li key={r.room_id}>
              <span>
                <code>{r.room_id}</code> · {t('home.here', { n: r.connected.length })}
                {r.locked ? ` · ${t('home.locked')}` : ''}
                {r.is_host ? ` · ${t('home.youHost')}` : ''}
              </span>
              <button type="button" onClick={() => navigate(services.memory.room(r.room_id) ? roomFragment(r.room_id) : inviteFragment(r.room_id, null, null))}>
                {t('home.rejoin')}
              </button>
            </li>
          ))}
        </ul>
      </section>
    </main>
  );
}
