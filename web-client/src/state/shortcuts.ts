/**
 * Keyboard shortcuts of the room, as a pure mapping from a key press to an action, so the rules
 * (letters as in Jitsi Meet, nothing while typing, nothing with Ctrl/Alt/Meta so the browser's own
 * shortcuts keep working) are unit-tested without a DOM.
 */
export type ShortcutAction = 'mic' | 'cam' | 'screen' | 'chat' | 'leave' | 'help';

export interface KeyPress {
  key: string;
  ctrlKey: boolean;
  altKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  repeat: boolean;
  /** The focus is in a text field, a select or an editable element: keys belong to it. */
  inEditable: boolean;
}

/** In the order the help dialog lists them; `keys` is what the dialog shows. */
export const SHORTCUTS: ReadonlyArray<{ action: ShortcutAction; keys: string }> = [
  { action: 'mic', keys: 'M' },
  { action: 'cam', keys: 'V' },
  { action: 'screen', keys: 'D' },
  { action: 'chat', keys: 'C' },
  { action: 'leave', keys: 'Shift+L' },
  { action: 'help', keys: '?' },
];

export function shortcutFor(e: KeyPress): ShortcutAction | null {
  if (e.ctrlKey || e.altKey || e.metaKey || e.repeat || e.inEditable) return null;
  // `?` is Shift+/ on most layouts: the character decides, not the modifier.
  if (e.key === '?') return 'help';
  // Leaving needs Shift, so a stray "l" never ends someone's call.
  if (e.key === 'L' && e.shiftKey) return 'leave';
  if (e.shiftKey) return null;
  switch (e.key.toLowerCase()) {
    case 'm':
      return 'mic';
    case 'v':
      return 'cam';
    case 'd':
      return 'screen';
    case 'c':
      return 'chat';
    default:
      return null;
  }
}
