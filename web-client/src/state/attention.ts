/**
 * What the tab does to get attention while it is hidden: a count in the title ("(3) Confab") and,
 * once the user allowed them, a notification per join or message. Pure: the session feeds it
 * timeline items and visibility changes, and performs what it answers.
 */
import type { ChatItem } from './roomState';

export function badgeTitle(base: string, count: number): string {
  return count > 0 ? `(${count}) ${base}` : base;
}

export type AttentionKind = 'message' | 'join';

/** Worth a badge and a notification: a new message from someone else, or someone else joining. */
export function attentionKind(item: ChatItem, myUserId: string): AttentionKind | null {
  if (item.sender === myUserId && item.kind !== 'system') return null;
  if (item.kind === 'text' || item.kind === 'file') return 'message';
  if (item.kind === 'system' && item.text === 'joined' && item.subject && item.subject !== myUserId) return 'join';
  return null;
}

export class AttentionCounter {
  private unseen = 0;
  private hidden = false;

  get count(): number {
    return this.unseen;
  }

  /** Returns whether the item counts (the tab is hidden); visible tabs need no attention. */
  note(kind: AttentionKind | null): boolean {
    if (!kind || !this.hidden) return false;
    this.unseen++;
    return true;
  }

  setHidden(hidden: boolean): void {
    this.hidden = hidden;
    if (!hidden) this.unseen = 0;
  }
}
