import { useEffect, useRef, useState } from 'react';
import { Tile, type TileProps } from './Tile';
import { gridShape } from '../../mesh/encoding';
import { displayName, type RoomViewState } from '../../state/roomState';
import { stageKey } from '../../state/spotlight';
import { useT } from '../services';
import styles from './CallGrid.module.css';

type TileEntry = TileProps & { key: string };

function tilesOf(s: RoomViewState): TileEntry[] {
  const me = displayName(s, s.me.userId);
  const tiles: TileEntry[] = [
    { key: 'self', testId: 'tile-self', stream: s.local.camera, name: me, label: 'camera', isSelf: true, micOn: s.local.mic, camOn: s.local.cam },
  ];
  if (s.local.screenStream) {
    tiles.push({ key: 'self-screen', testId: 'tile-self-screen', stream: s.local.screenStream, name: me, label: 'screen', isSelf: true, micOn: false, camOn: true });
  }
  for (const p of Object.values(s.peers)) {
    const name = displayName(s, p.userId);
    const cam = p.streams.find((x) => x.label === 'camera');
    tiles.push({ key: p.key, testId: `tile-${p.key}`, stream: cam?.stream ?? null, name, label: 'camera', isSelf: false, state: p.state, keyMismatch: !!s.keyMismatch[p.key], quality: s.quality[p.key], sinkId: s.deviceChoice.audiooutput, micOn: p.media.mic, camOn: p.media.cam || (!!cam && p.media.cam === undefined) });
    for (const sc of p.streams.filter((x) => x.label === 'screen')) {
      tiles.push({ key: `${p.key}-${sc.id}`, testId: `tile-screen-${p.key}`, stream: sc.stream, name, label: 'screen', isSelf: false, sinkId: s.deviceChoice.audiooutput, micOn: false, camOn: true });
    }
  }
  return tiles;
}

/**
 * The call: an equal grid sized so tiles are largest for the space (phone to desktop), or, with a
 * screen share or a pinned tile, that one on the stage and the others in a strip beside or below.
 */
export function CallGrid({ state }: { state: RoomViewState }) {
  const t = useT();
  const ref = useRef<HTMLDivElement>(null);
  const [box, setBox] = useState({ w: 800, h: 450 });
  const [pinned, setPinned] = useState<string | null>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(([entry]) => entry && setBox({ w: entry.contentRect.width, h: entry.contentRect.height }));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const tiles = tilesOf(state);
  const stage = stageKey(tiles, pinned);
  const pinProps = (key: string) => ({ pinned: key === pinned, onPin: () => setPinned(key === pinned ? null : key) });

  if (stage) {
    const main = tiles.find((x) => x.key === stage)!;
    const rest = tiles.filter((x) => x.key !== stage);
    const { key: mainKey, ...mainProps } = main;
    return (
      <section ref={ref} className={`${styles.spotlight} ${box.w < box.h ? styles.portrait : ''}`} aria-label={t('room.participants')} data-testid="spotlight" data-stage={main.testId}>
        <div className={styles.stage}>
          <Tile key={mainKey} {...mainProps} {...pinProps(mainKey)} />
        </div>
        <div className={styles.strip} data-testid="strip">
          {rest.map(({ key, ...p }) => (
            <Tile key={key} {...p} {...pinProps(key)} />
          ))}
        </div>
      </section>
    );
  }
  const { cols, rows } = gridShape(tiles.length, box.w, box.h);
  return (
    <section ref={ref} className={styles.grid} style={{ gridTemplateColumns: `repeat(${cols}, minmax(0, 1fr))`, gridTemplateRows: `repeat(${rows}, minmax(0, 1fr))` }} aria-label={t('room.participants')}>
      {tiles.map(({ key, ...p }) => (
        <Tile key={key} {...p} {...pinProps(key)} />
      ))}
    </section>
  );
}
