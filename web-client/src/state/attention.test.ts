import { describe, expect, it } from 'vitest';
import { AttentionCounter, attentionKind, badgeTitle } from './attention';
import type { ChatItem } from './roomState';

const item = (over: Partial<ChatItem>): ChatItem => ({ seq: 1, ts: 0, sender: '@bob:x', deviceId: 'B', kind: 'text', status: 'ok', text: 'hi', ...over });

describe('attention while hidden', () => {
  it('badges the title with the count', () => {
    expect(badgeTitle('Confab', 0)).toBe('Confab');
    expect(badgeTitle('Confab', 3)).toBe('(3) Confab');
  });
  it('counts messages and joins of others, not our own or other system items', () => {
    expect(attentionKind(item({}), '@me:x')).toBe('message');
    expect(attentionKind(item({ kind: 'file' }), '@me:x')).toBe('message');
    expect(attentionKind(item({ sender: '@me:x' }), '@me:x')).toBeNull();
    expect(attentionKind(item({ kind: 'system', text: 'joined', subject: '@bob:x' }), '@me:x')).toBe('join');
    expect(attentionKind(item({ kind: 'system', text: 'joined', subject: '@me:x', sender: '@me:x' }), '@me:x')).toBeNull();
    expect(attentionKind(item({ kind: 'system', text: 'left', subject: '@bob:x' }), '@me:x')).toBeNull();
  });
  it('counts only while hidden, and starts over when shown', () => {
    const a = new AttentionCounter();
    expect(a.note('message')).toBe(false);
    a.setHidden(true);
    expect(a.note('message')).toBe(true);
    expect(a.note(null)).toBe(false);
    expect(a.note('join')).toBe(true);
    expect(a.count).toBe(2);
    a.setHidden(false);
    expect(a.count).toBe(0);
  });
});
