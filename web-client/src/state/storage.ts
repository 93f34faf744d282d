/**
 * What this browser remembers, in localStorage: the display name, the guest session (so a reload
 * rejoins without asking), and per room the E2EE passphrase and the seq at which we joined (so
 * history since joining can be fetched again after a reload). Plaintext is never stored: history is
 * re-read as ciphertext from the server and decrypted again.
 */
import type { Session } from '../protocol/types';

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface RoomMemory {
  passphrase: string;
  /** The room's latest seq when this browser first joined: history starts after it. */
  joinedSeq: number;
  lastSeen: number;
  /** Secrets of keys the room replaced after removals, newest first: history from before is read with them. */
  olderSecrets?: string[];
}

const K = {
  name: 'confab.displayName',
  shareName: 'confab.shareName',
  session: 'confab.session',
  rooms: 'confab.rooms',
};

export class LocalMemory {
  constructor(private readonly kv: KeyValueStore) {}

  private read<T>(key: string): T | null {
    try {
      const v = this.kv.getItem(key);
      return v === null ? null : (JSON.parse(v) as T);
    } catch {
      return null;
    }
  }
  private write(key: string, v: unknown): void {
    try {
      this.kv.setItem(key, JSON.stringify(v));
    } catch {
      /* storage full or disabled: the app still works for this page's life */
    }
  }

  get displayName(): string {
    return this.read<string>(K.name) ?? '';
  }
  set displayName(v: string) {
    this.write(K.name, v);
  }
  get shareName(): boolean {
    return this.read<boolean>(K.shareName) ?? false;
  }
  set shareName(v: boolean) {
    this.write(K.shareName, v);
  }
  get session(): Session | null {
    return this.read<Session>(K.session);
  }
  set session(s: Session | null) {
    if (s) this.write(K.session, s);
    else this.kv.removeItem(K.session);
  }
  rooms(): Record<string, RoomMemory> {
    return this.read<Record<string, RoomMemory>>(K.rooms) ?? {};
  }
  room(roomId: string): RoomMemory | null {
    return this.rooms()[roomId] ?? null;
  }
  rememberRoom(roomId: string, m: Partial<RoomMemory> & { passphrase?: string }): RoomMemory {
    const all = this.rooms();
    const prev = all[roomId];
    const next: RoomMemory = {
      passphrase: m.passphrase ?? prev?.passphrase ?? '',
      joinedSeq: prev ? prev.joinedSeq : (m.joinedSeq ?? 0),
      lastSeen: m.lastSeen ?? Date.now(),
      ...((m.olderSecrets ?? prev?.olderSecrets) ? { olderSecrets: m.olderSecrets ?? prev?.olderSecrets } : {}),
    };
    all[roomId] = next;
    this.write(K.rooms, all);
    return next;
  }
  forgetRoom(roomId: string): void {
    const all = this.rooms();
    delete all[roomId];
    this.write(K.rooms, all);
  }
  /**
   * Forget every room not in `listed` (the rooms the server still lists for this session): a room
   * that expired or was deleted leaves no passphrase behind. Returns the rooms forgotten.
   */
  keepOnly(listed: Iterable<string>): string[] {
    const keep = new Set(listed);
    const all = this.rooms();
    const gone = Object.keys(all).filter((id) => !keep.has(id));
    if (gone.length === 0) return gone;
    for (const id of gone) delete all[id];
    this.write(K.rooms, all);
    return gone;
  }
}

/** A Map-backed store for tests and for browsers with storage disabled. */
export function memoryStore(): KeyValueStore {
  const m = new Map<string, string>();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v), removeItem: (k) => void m.delete(k) };
}
