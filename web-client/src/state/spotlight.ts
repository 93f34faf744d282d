/**
 * Spotlight: which tile takes the stage. A tile the user pinned wins; else the newest screen share
 * from someone else (people share a screen to be looked at); else our own screen share; else none
 * and the call is an equal grid. Pure, so the rule is unit-tested.
 */
export interface StageCandidate {
  key: string;
  label: 'camera' | 'screen';
  isSelf: boolean;
}

export function stageKey(tiles: readonly StageCandidate[], pinned: string | null): string | null {
  if (pinned && tiles.some((t) => t.key === pinned)) return pinned;
  const screens = tiles.filter((t) => t.label === 'screen');
  const remote = screens.filter((t) => !t.isSelf);
  return (remote.at(-1) ?? screens.at(-1))?.key ?? null;
}
