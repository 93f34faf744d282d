/**
 * The key check on the wire and the verdict drawn from the checks peers sent.
 *
 * Each client sends its room key's check value (crypto/e2ee.ts `RoomKey.check`) to every device in
 * the room when it subscribes, and answers a device that asks. It travels as a signal payload
 * `kc1.<check>.<ask>` that is not sealed with the room key, because the point is that a peer with
 * another key can read it. The socket is TLS, so only the servers see it, and it gives them
 * nothing: the check is an HMAC under the key, so testing a passphrase guess against it costs the
 * same 600,000 PBKDF2 iterations as testing it against any stored chat ciphertext, which servers
 * already hold. A server could forge a check to make peers look mismatched; it can just as well
 * drop their signals, so that is no new power.
 */
import { deviceKey } from '../mesh/negotiation';

const PREFIX = 'kc1.';

export function encodeKeyCheck(check: string, ask: boolean): string {
  return `${PREFIX}${check}.${ask ? 1 : 0}`;
}

/** The key check in a signal payload, or null for an ordinary (sealed) signal. */
export function decodeKeyCheck(payload: string): { check: string; ask: boolean } | null {
  if (!payload.startsWith(PREFIX)) return null;
  const m = /^kc1\.([A-Za-z0-9_-]{16,64})\.([01])$/.exec(payload);
  return m ? { check: m[1]!, ask: m[2] === '1' } : null;
}

export interface KeyVerdict {
  /** device keys whose check differs from ours */
  mismatched: Record<string, true>;
  /**
   * Our key is the odd one out: the host's devices that answered all differ from us, or, with no
   * host device heard, every device that answered does. The host's key is the room's by definition.
   */
  mineIsWrong: boolean;
}

export function judgeKeys(mine: string, peers: ReadonlyMap<string, string>, host: string, myUserId: string): KeyVerdict {
  const mismatched: Record<string, true> = {};
  let hostHeard = false;
  let hostMatches = false;
  let anyMatches = false;
  for (const [peer, check] of peers) {
    const same = check === mine;
    if (!same) mismatched[peer] = true;
    else anyMatches = true;
    if (host && peer.startsWith(deviceKey(host, ''))) {
      hostHeard = true;
      if (same) hostMatches = true;
    }
  }
  let mineIsWrong = false;
  if (myUserId !== host) mineIsWrong = hostHeard ? !hostMatches : peers.size > 0 && !anyMatches;
  return { mismatched, mineIsWrong };
}
