/**
 * Telling peer-connection incarnations apart. Each page load picks a random `sid` and stamps it on
 * every signal it sends, with the sid it believes the receiver has (`to`). A reload on the other
 * side shows up as a new sid, so the old RTCPeerConnection is replaced instead of being fed an offer
 * with foreign DTLS fingerprints; signals addressed to our previous page, or sent by a retired
 * remote page, are dropped. Our own sid never changes during a page's life, so two sides can never
 * keep resetting each other.
 */

export type SignalVerdict = 'accept' | 'reset' | 'stale';

export class IncarnationTracker {
  private readonly bound = new Map<string, string>();
  private readonly retired = new Map<string, Set<string>>();

  constructor(readonly localSid: string) {}

  remoteSid(key: string): string | null {
    return this.bound.get(key) ?? null;
  }

  classify(key: string, fromSid: string, toSid: string | null): SignalVerdict {
    if (toSid !== null && toSid !== this.localSid) return 'stale';
    if (this.retired.get(key)?.has(fromSid)) return 'stale';
    const current = this.bound.get(key);
    if (current === undefined) {
      this.bound.set(key, fromSid);
      return 'accept';
    }
    if (current === fromSid) return 'accept';
    this.retire(key, current);
    this.bound.set(key, fromSid);
    return 'reset';
  }

  /**
   * The remote device went offline. Its sid is not retired: a socket drop without a reload comes
   * back with the same page (and sid), whose signals must still be accepted.
   */
  forget(key: string): void {
    this.bound.delete(key);
  }

  private retire(key: string, sid: string): void {
    let set = this.retired.get(key);
    if (!set) this.retired.set(key, (set = new Set()));
    set.add(sid);
  }
}
