import { useEffect, useRef, useState } from 'react';
import { Tile, type TileProps } from './Tile';
import { gridShape } from '../../mesh/encoding';
import { displayName, type RoomViewState } from '../../state/roomState';
import { useT } from '../services';
import styles from './CallGrid.module.css';

function tilesOf(s: RoomViewState): Array<TileProps & { key: string }> {
  const me = displayName(s, s.me.userId);
  const tiles: Array<TileProps & { key: string }> = [
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
      tiles.push({ key: `${p.key}-${sc.id}`, testId: `tile-screen-${p.key}`, stream: sc.stream, name, label: 'screen', isSelf: false, micOn: false, camOn: true });
    }
  }
  return tiles;
}

/** Tiles laid out in the grid that makes them largest for the space available (phone to desktop). */
export function CallGrid({ state }: { state: RoomViewState }) {
  const t = useT();
  const ref = useRef<HTMLDivElement>(null);
  const [box, setBox] = useState({ w: 800, h: 450 });
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(([entry]) => entry && setBox({ w: entry.contentRect.width, h: entry.contentRect.height }));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const tiles = tilesOf(state);
  const { cols, rows } = gridShape(tiles.length, box.w, box.h);
  return (
    <section ref={ref} className={styles.grid} style={{ gridTemplateColumns: `repeat(${cols}, minmax(0, 1fr))`, gridTemplateRows: `repeat(${rows}, minmax(0, 1fr))` }} aria-label={t('room.participants')}>
      {tiles.map(({ key, ...t }) => (
        <Tile key={key} {...t} />
      ))}
    </section>
  );
}
