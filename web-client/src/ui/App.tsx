import { lazy, Suspense, useEffect, useState } from 'react';
import { Services, ServicesContext } from './services';
import { useHashRoute } from './useHashRoute';
import { Home } from './Home';
import { PreJoin } from './PreJoin';
import styles from './App.module.css';

// The room (mesh, chat, call grid) is the heavy part: it loads only when a room is opened.
const RoomPage = lazy(() => import('./room/RoomPage'));

export function App() {
  const [services] = useState(() => new Services());
  const route = useHashRoute();
  useEffect(() => {
    document.documentElement.lang = services.lang;
  }, [services]);
  return (
    <ServicesContext.Provider value={services}>
      <div className={styles.app}>
        {route.page === 'home' && <Home prefs={route.prefs} />}
        {route.page === 'join' && <PreJoin key={route.roomId} route={route} />}
        {route.page === 'room' && (
          <Suspense fallback={<p role="status" className={styles.loading}>{services.t('room.opening')}</p>}>
            <RoomPage key={route.roomId} roomId={route.roomId} prefs={route.prefs} />
          </Suspense>
        )}
      </div>
    </ServicesContext.Provider>
  );
}
