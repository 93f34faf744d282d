import { describe, expect, it } from 'vitest';
import { SHORTCUTS, shortcutFor, type KeyPress } from './shortcuts';

const press = (key: string, more: Partial<KeyPress> = {}): KeyPress => ({ key, ctrlKey: false, altKey: false, metaKey: false, shiftKey: false, repeat: false, inEditable: false, ...more });

describe('keyboard shortcuts', () => {
  it('maps the letters of Jitsi Meet, either case', () => {
    expect(shortcutFor(press('m'))).toBe('mic');
    expect(shortcutFor(press('v'))).toBe('cam');
    expect(shortcutFor(press('d'))).toBe('screen');
    expect(shortcutFor(press('c'))).toBe('chat');
    expect(shortcutFor(press('M', { shiftKey: false }))).toBe('mic'); // caps lock
    expect(shortcutFor(press('x'))).toBeNull();
  });
  it('opens the help with ? whatever modifier the layout needs for it', () => {
    expect(shortcutFor(press('?', { shiftKey: true }))).toBe('help');
    expect(shortcutFor(press('?'))).toBe('help');
  });
  it('leaves only with Shift+L, never with a plain l', () => {
    expect(shortcutFor(press('L', { shiftKey: true }))).toBe('leave');
    expect(shortcutFor(press('l'))).toBeNull();
    expect(shortcutFor(press('M', { shiftKey: true }))).toBeNull();
  });
  it('stays out of the way while typing, of browser shortcuts and of key repeat', () => {
    expect(shortcutFor(press('m', { inEditable: true }))).toBeNull();
    expect(shortcutFor(press('?', { inEditable: true }))).toBeNull();
    expect(shortcutFor(press('c', { ctrlKey: true }))).toBeNull();
    expect(shortcutFor(press('d', { metaKey: true }))).toBeNull();
    expect(shortcutFor(press('v', { altKey: true }))).toBeNull();
    expect(shortcutFor(press('m', { repeat: true }))).toBeNull();
  });
  it('lists every action once, in the help dialog order', () => {
    expect(SHORTCUTS.map((s) => s.action)).toEqual(['mic', 'cam', 'screen', 'chat', 'leave', 'help']);
  });
});
