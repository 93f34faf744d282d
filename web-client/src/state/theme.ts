/**
 * The colour theme: follow the system (`prefers-color-scheme`), or a choice the user made with the
 * switch, remembered in this browser. The document gets `data-theme` only for a forced choice, so
 * with 'system' the stylesheet's media query decides.
 */
import type { KeyValueStore } from './storage';

export type ThemeChoice = 'system' | 'light' | 'dark';
const KEY = 'confab.theme';

export function readTheme(kv: KeyValueStore): ThemeChoice {
  try {
    const v = kv.getItem(KEY);
    return v === 'light' || v === 'dark' ? v : 'system';
  } catch {
    return 'system';
  }
}

export function writeTheme(kv: KeyValueStore, choice: ThemeChoice): void {
  try {
    if (choice === 'system') kv.removeItem(KEY);
    else kv.setItem(KEY, choice);
  } catch {
    /* storage disabled: the choice lasts for this page */
  }
}

/** The value for `<html data-theme>`: none when the system decides. */
export function themeAttribute(choice: ThemeChoice): string | null {
  return choice === 'system' ? null : choice;
}
