/**
 * End-to-end encryption of everything peers say to each other through the servers (chat, file
 * offers, profile names, WebRTC signaling), with Web Crypto only:
 *
 * - key: PBKDF2-HMAC-SHA256(passphrase NFC-normalised, salt = "confab/v1/" + room id, ≥ 600,000
 *   iterations) → AES-256-GCM key, non-extractable. Binding the salt to the room means one
 *   passphrase gives unrelated keys in different rooms.
 * - message: fresh random 96-bit IV; AAD = canonical encoding of (room id, sender user id, sender
 *   device id, kind), so a server cannot relabel a ciphertext's sender or kind or move it to another room.
 * - wire: base64url( "v1" || iv (12 bytes) || ciphertext+tag ), unpadded. The 2-byte ASCII prefix
 *   lets a later version change any of this without guessing.
 */
import { base64urlDecode, base64urlEncode, utf8 } from './encoding';

export const KDF_ITERATIONS = 600_000;
export const SALT_PREFIX = 'confab/v1/';
const VERSION = utf8('v1');
const IV_BYTES = 12;
const AAD_LABEL = 'confab/v1/aad';

export interface MessageContext {
  roomId: string;
  userId: string;
  deviceId: string;
  kind: string;
}

/** Why a ciphertext could not be opened: shown as "protected" in the UI, never as text. */
export class DecryptError extends Error {
  constructor(readonly why: 'format' | 'version' | 'auth') {
    super(`cannot decrypt (${why})`);
    this.name = 'DecryptError';
  }
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('Web Crypto is unavailable: Confab needs a secure context (https or localhost).');
  return s;
}

/** The passphrase actually used: a blank one falls back to the room id (the UI warns about it). */
export function effectivePassphrase(passphrase: string, roomId: string): { secret: string; weak: boolean } {
  const trimmed = passphrase.trim();
  return trimmed === '' ? { secret: roomId, weak: true } : { secret: passphrase.normalize('NFC'), weak: false };
}

/** Raw PBKDF2-HMAC-SHA256, exposed for known-answer tests. */
export async function pbkdf2Sha256(password: Uint8Array, salt: Uint8Array, iterations: number, bytes: number): Promise<Uint8Array> {
  const base = await subtle().importKey('raw', password as BufferSource, 'PBKDF2', false, ['deriveBits']);
  const bits = await subtle().deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: salt as BufferSource, iterations }, base, bytes * 8);
  return new Uint8Array(bits);
}

/** Derive the room's AES-256-GCM key. `iterations` may only be lowered in tests. */
export async function deriveRoomKey(passphrase: string, roomId: string, iterations = KDF_ITERATIONS): Promise<CryptoKey> {
  const { secret } = effectivePassphrase(passphrase, roomId);
  const raw = await pbkdf2Sha256(utf8(secret), utf8(SALT_PREFIX + roomId), iterations, 32);
  try {
    return await subtle().importKey('raw', raw as BufferSource, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  } finally {
    raw.fill(0);
  }
}

/**
 * The room key and the two values derived from its raw bytes beside it, each with its own label so
 * neither reveals the other or the key:
 * - `check`: HMAC-SHA256(raw, "confab/v1/key-check" ‖ room id), 128 bits, base64url. Peers exchange
 *   it so a different passphrase is recognised at once. It is compared by machines and may pass a
 *   server: it lets no one test a passphrase guess faster than a stored ciphertext already does.
 * - `fingerprint`: SHA-256("confab/v1/fingerprint" ‖ room id ‖ raw), its first 64 bits as 12
 *   decimal digits in groups of three, for people to compare by voice.
 */
export interface RoomKey {
  key: CryptoKey;
  check: string;
  fingerprint: string;
}

/** Make the room key from 32 raw bytes (from PBKDF2, or fresh random bytes after a removal); the bytes are wiped. */
export async function roomKeyFromRaw(raw: Uint8Array, roomId: string): Promise<RoomKey> {
  try {
    const key = await subtle().importKey('raw', raw as BufferSource, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
    const mac = await subtle().importKey('raw', raw as BufferSource, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    const check = new Uint8Array(await subtle().sign('HMAC', mac, utf8(`confab/v1/key-check\u0000${roomId}`) as BufferSource)).slice(0, 16);
    const label = utf8(`confab/v1/fingerprint\u0000${roomId}\u0000`);
    const material = new Uint8Array(label.length + raw.length);
    material.set(label, 0);
    material.set(raw, label.length);
    const digest = new Uint8Array(await subtle().digest('SHA-256', material as BufferSource));
    material.fill(0);
    return { key, check: base64urlEncode(check), fingerprint: fingerprintDigits(digest) };
  } finally {
    raw.fill(0);
  }
}

/** The first 64 bits of `digest` as 12 decimal digits, "482 913 075 611". */
export function fingerprintDigits(digest: Uint8Array): string {
  let n = 0n;
  for (let i = 0; i < 8; i++) n = (n << 8n) | BigInt(digest[i] ?? 0);
  const digits = (n % 10n ** 12n).toString().padStart(12, '0');
  return digits.match(/\d{3}/g)!.join(' ');
}

/**
 * A room secret that is a key itself (made after a removal, see RoomSession.kick): "k1." and 32
 * random bytes in base64url. It rides in invite links like a passphrase, and skips PBKDF2, which
 * only exists to slow down guessing of human-chosen passphrases.
 */
const RAW_SECRET = 'k1.';

export function rawKeySecret(raw: Uint8Array): string {
  return RAW_SECRET + base64urlEncode(raw);
}

/** The room key, its key check and its fingerprint from the passphrase (see deriveRoomKey), or from a raw-key secret. */
export async function deriveRoomKeyMaterial(passphrase: string, roomId: string, iterations = KDF_ITERATIONS): Promise<RoomKey> {
  if (passphrase.startsWith(RAW_SECRET)) {
    let raw: Uint8Array | null = null;
    try {
      raw = base64urlDecode(passphrase.slice(RAW_SECRET.length));
    } catch {
      raw = null;
    }
    if (raw && raw.length === 32) return roomKeyFromRaw(raw, roomId);
  }
  const { secret } = effectivePassphrase(passphrase, roomId);
  return roomKeyFromRaw(await pbkdf2Sha256(utf8(secret), utf8(SALT_PREFIX + roomId), iterations, 32), roomId);
}

/** Canonical AAD: a label then each field as u32 big-endian byte length + UTF-8 bytes (unambiguous). */
export function encodeAad(ctx: MessageContext): Uint8Array {
  const parts = [AAD_LABEL, ctx.roomId, ctx.userId, ctx.deviceId, ctx.kind].map(utf8);
  const total = parts.reduce((n, p) => n + 4 + p.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let off = 0;
  for (const p of parts) {
    view.setUint32(off, p.length);
    out.set(p, off + 4);
    off += 4 + p.length;
  }
  return out;
}

export async function encryptBytes(key: CryptoKey, plaintext: Uint8Array, ctx: MessageContext): Promise<string> {
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const ct = new Uint8Array(
    await subtle().encrypt({ name: 'AES-GCM', iv, additionalData: encodeAad(ctx) as BufferSource, tagLength: 128 }, key, plaintext as BufferSource),
  );
  const out = new Uint8Array(VERSION.length + IV_BYTES + ct.length);
  out.set(VERSION, 0);
  out.set(iv, VERSION.length);
  out.set(ct, VERSION.length + IV_BYTES);
  return base64urlEncode(out);
}

export async function decryptBytes(key: CryptoKey, wire: string, ctx: MessageContext): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = base64urlDecode(wire);
  } catch {
    throw new DecryptError('format');
  }
  if (bytes.length < VERSION.length + IV_BYTES + 16) throw new DecryptError('format');
  if (bytes[0] !== VERSION[0] || bytes[1] !== VERSION[1]) throw new DecryptError('version');
  const iv = bytes.slice(VERSION.length, VERSION.length + IV_BYTES);
  const ct = bytes.slice(VERSION.length + IV_BYTES);
  try {
    const pt = await subtle().decrypt({ name: 'AES-GCM', iv, additionalData: encodeAad(ctx) as BufferSource, tagLength: 128 }, key, ct);
    return new Uint8Array(pt);
  } catch {
    throw new DecryptError('auth');
  }
}

/** Encrypt a JSON value. */
export async function sealJson(key: CryptoKey, value: unknown, ctx: MessageContext): Promise<string> {
  return encryptBytes(key, utf8(JSON.stringify(value)), ctx);
}

/** Decrypt a JSON value; throws DecryptError for anything not sealed with this key and context. */
export async function openJson<T>(key: CryptoKey, wire: string, ctx: MessageContext): Promise<T> {
  const pt = await decryptBytes(key, wire, ctx);
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(pt)) as T;
  } catch {
    throw new DecryptError('format');
  }
}

/** A fresh link secret: 192 random bits, URL-safe. */
export function randomSecret(bytes = 24): string {
  return base64urlEncode(globalThis.crypto.getRandomValues(new Uint8Array(bytes)));
}

export async function sha256Hex(data: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await subtle().digest('SHA-256', data as BufferSource);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
