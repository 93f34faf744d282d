import { describe, expect, it } from 'vitest';
import { readTheme, themeAttribute, writeTheme } from './theme';
import { memoryStore } from './storage';

describe('theme choice', () => {
  it('follows the system until a choice is made, and remembers it', () => {
    const kv = memoryStore();
    expect(readTheme(kv)).toBe('system');
    expect(themeAttribute('system')).toBeNull();
    writeTheme(kv, 'light');
    expect(readTheme(kv)).toBe('light');
    expect(themeAttribute('light')).toBe('light');
    writeTheme(kv, 'system');
    expect(readTheme(kv)).toBe('system');
    kv.setItem('confab.theme', 'purple');
    expect(readTheme(kv)).toBe('system');
  });
});
