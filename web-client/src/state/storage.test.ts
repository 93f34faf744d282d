/** What the browser keeps: rooms the server no longer lists are forgotten with their passphrase. */
import { describe, expect, it } from 'vitest';
import { LocalMemory, memoryStore } from './storage';

describe('local memory', () => {
  it('keeps only the rooms the server still lists, passphrases included', () => {
    const store = memoryStore();
    const memory = new LocalMemory(store);
    memory.rememberRoom('!live:a', { passphrase: 'kept' });
    memory.rememberRoom('!expired:a', { passphrase: 'secret of a room that is gone' });
    memory.rememberRoom('!deleted:b', { passphrase: 'another' });
    expect(memory.keepOnly(['!live:a', '!never-remembered:a']).sort()).toEqual(['!deleted:b', '!expired:a']);
    expect(Object.keys(memory.rooms())).toEqual(['!live:a']);
    expect(memory.room('!live:a')?.passphrase).toBe('kept');
    // Nothing of the forgotten rooms is left in the store itself.
    expect(JSON.stringify(new LocalMemory(store).rooms())).not.toContain('secret of a room that is gone');
    expect(memory.keepOnly(['!live:a'])).toEqual([]);
  });
});
