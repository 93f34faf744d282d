import { describe, expect, it } from 'vitest';
import { stageKey } from './spotlight';

const cam = (key: string, isSelf = false) => ({ key, label: 'camera' as const, isSelf });
const screen = (key: string, isSelf = false) => ({ key, label: 'screen' as const, isSelf });

describe('spotlight', () => {
  it('is an equal grid without a pin or a screen share', () => {
    expect(stageKey([cam('self', true), cam('a'), cam('b')], null)).toBeNull();
  });
  it('puts the newest screen share of someone else on stage, else our own', () => {
    expect(stageKey([cam('self', true), screen('self-screen', true), cam('a'), screen('a-s'), screen('b-s')], null)).toBe('b-s');
    expect(stageKey([cam('self', true), screen('self-screen', true), cam('a')], null)).toBe('self-screen');
  });
  it('a pin wins, and a pin on a tile that went away is ignored', () => {
    expect(stageKey([cam('a'), screen('b-s')], 'a')).toBe('a');
    expect(stageKey([cam('a'), screen('b-s')], 'gone')).toBe('b-s');
  });
});
