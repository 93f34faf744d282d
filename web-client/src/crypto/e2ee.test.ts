import { describe, expect, it } from 'vitest';
import { pbkdf2Sync, webcrypto } from 'node:crypto';
import {
  decryptBytes,
  DecryptError,
  deriveRoomKey,
  deriveRoomKeyMaterial,
  fingerprintDigits,
  roomKeyFromRaw,
  effectivePassphrase,
  encodeAad,
  encryptBytes,
  KDF_ITERATIONS,
  openJson,
  sealJson,
  pbkdf2Sha256,
  SALT_PREFIX,
  type MessageContext,
} from './e2ee';
import { base64urlDecode, base64urlEncode, utf8 } from './encoding';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const ctx: MessageContext = { roomId: '!abc:example.org', userId: '@u1:example.org', deviceId: 'DEV1', kind: 'text' };
// Tests derive with few iterations to stay fast; production strength is asserted separately.
const FAST = 1000;

describe('PBKDF2-HMAC-SHA256 known answers', () => {
  it('matches RFC 7914 §11 (passwd / salt / 1 iteration / 64 bytes)', async () => {
    const out = await pbkdf2Sha256(utf8('passwd'), utf8('salt'), 1, 64);
    expect(hex(out)).toBe(
      '55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783',
    );
  });

  it('matches RFC 7914 §11 (Password / NaCl / 80000 iterations / 64 bytes)', async () => {
    const out = await pbkdf2Sha256(utf8('Password'), utf8('NaCl'), 80000, 64);
    expect(hex(out)).toBe(
      '4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d',
    );
  });

  it.each([
    ['correct horse', '!room1:a.example', 1],
    ['pässwörd (NFC)', '!r:b', 10],
    ['', '!empty:c', 100],
  ])('agrees with Node crypto for %s', async (pw, room, iters) => {
    const salt = SALT_PREFIX + room;
    const expected = pbkdf2Sync(Buffer.from(pw, 'utf8'), Buffer.from(salt, 'utf8'), iters, 32, 'sha256');
    const got = await pbkdf2Sha256(utf8(pw), utf8(salt), iters, 32);
    expect(hex(got)).toBe(expected.toString('hex'));
  });

  it('uses at least 600,000 iterations and a room-bound salt by default', async () => {
    expect(KDF_ITERATIONS).toBeGreaterThanOrEqual(600_000);
    // The derived key must equal AES key = PBKDF2(pass, "confab/v1/"+room, 600000): check by decrypting
    // a message sealed under a key imported from Node's own derivation.
    const raw = pbkdf2Sync('s3cret', SALT_PREFIX + ctx.roomId, KDF_ITERATIONS, 32, 'sha256');
    const nodeKey = await webcrypto.subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
    const ours = await deriveRoomKey('s3cret', ctx.roomId);
    const wire = await encryptBytes(nodeKey as CryptoKey, utf8('hi'), ctx);
    expect(new TextDecoder().decode(await decryptBytes(ours, wire, ctx))).toBe('hi');
  });
});

describe('AES-256-GCM messages', () => {
  it('round-trips JSON and uses a fresh IV each time', async () => {
    const key = await deriveRoomKey('pw', ctx.roomId, FAST);
    const a = await sealJson(key, { text: 'hello' }, ctx);
    const b = await sealJson(key, { text: 'hello' }, ctx);
    expect(a).not.toBe(b);
    const bytesA = base64urlDecode(a);
    const bytesB = base64urlDecode(b);
    expect(new TextDecoder().decode(bytesA.slice(0, 2))).toBe('v1');
    expect(hex(bytesA.slice(2, 14))).not.toBe(hex(bytesB.slice(2, 14)));
    expect(await openJson(key, a, ctx)).toEqual({ text: 'hello' });
  });

  it('rejects a wrong key', async () => {
    const key = await deriveRoomKey('pw', ctx.roomId, FAST);
    const wrong = await deriveRoomKey('other', ctx.roomId, FAST);
    const wire = await sealJson(key, { text: 'secret' }, ctx);
    await expect(openJson(wrong, wire, ctx)).rejects.toBeInstanceOf(DecryptError);
  });

  it('binds the key to the room (same passphrase, other room)', async () => {
    const k1 = await deriveRoomKey('pw', '!one:x', FAST);
    const k2 = await deriveRoomKey('pw', '!two:x', FAST);
    const wire = await sealJson(k1, 1, { ...ctx, roomId: '!one:x' });
    await expect(openJson(k2, wire, { ...ctx, roomId: '!one:x' })).rejects.toBeInstanceOf(DecryptError);
  });

  it.each(['roomId', 'userId', 'deviceId', 'kind'] as const)('rejects a tampered AAD field: %s', async (field) => {
    const key = await deriveRoomKey('pw', ctx.roomId, FAST);
    const wire = await sealJson(key, { text: 'x' }, ctx);
    await expect(openJson(key, wire, { ...ctx, [field]: ctx[field] + 'x' })).rejects.toMatchObject({ why: 'auth' });
  });

  it('rejects tampered ciphertext, IV, tag and version', async () => {
    const key = await deriveRoomKey('pw', ctx.roomId, FAST);
    const wire = await sealJson(key, { text: 'x' }, ctx);
    const bytes = base64urlDecode(wire);
    const flip = (i: number) => {
      const c = bytes.slice();
      c[i]! ^= 1;
      return base64urlEncode(c);
    };
    await expect(openJson(key, flip(5), ctx)).rejects.toMatchObject({ why: 'auth' }); // IV
    await expect(openJson(key, flip(15), ctx)).rejects.toMatchObject({ why: 'auth' }); // ciphertext
    await expect(openJson(key, flip(bytes.length - 1), ctx)).rejects.toMatchObject({ why: 'auth' }); // tag
    await expect(openJson(key, flip(1), ctx)).rejects.toMatchObject({ why: 'version' });
    await expect(openJson(key, 'not base64!', ctx)).rejects.toMatchObject({ why: 'format' });
    await expect(openJson(key, 'djE', ctx)).rejects.toMatchObject({ why: 'format' });
  });

  it('refuses plaintext sent where ciphertext belongs', async () => {
    const key = await deriveRoomKey('pw', ctx.roomId, FAST);
    await expect(openJson(key, JSON.stringify({ text: 'plain' }), ctx)).rejects.toBeInstanceOf(DecryptError);
    await expect(openJson(key, base64urlEncode(utf8('hello world, this is plaintext!')), ctx)).rejects.toBeInstanceOf(DecryptError);
  });

  it('falls back to the room id for a blank passphrase', async () => {
    expect(effectivePassphrase('  ', '!r:x')).toEqual({ secret: '!r:x', weak: true });
    expect(effectivePassphrase('e\u0301', '!r:x')).toEqual({ secret: '\u00e9', weak: false });
    const blank = await deriveRoomKey('', ctx.roomId, FAST);
    const explicit = await deriveRoomKey(ctx.roomId, ctx.roomId, FAST);
    const wire = await sealJson(blank, 'ok', ctx);
    expect(await openJson(explicit, wire, ctx)).toBe('ok');
  });

  it('encodes AAD unambiguously', () => {
    const a = encodeAad({ roomId: 'ab', userId: 'c', deviceId: 'd', kind: 'k' });
    const b = encodeAad({ roomId: 'a', userId: 'bc', deviceId: 'd', kind: 'k' });
    expect(hex(a)).not.toBe(hex(b));
  });

  it('base64url round-trips every length', () => {
    for (let n = 0; n < 40; n++) {
      const b = webcrypto.getRandomValues(new Uint8Array(n));
      const e = base64urlEncode(b);
      expect(e).toBe(Buffer.from(b).toString('base64url'));
      expect(hex(base64urlDecode(e))).toBe(hex(b));
    }
  });
});

describe('key check and fingerprint', () => {
  const raw = (fill: number) => new Uint8Array(32).fill(fill);

  it('agree for the same key and room, differ for another key or room, and wipe the raw bytes', async () => {
    const bytes = raw(7);
    const a = await roomKeyFromRaw(bytes, '!r:x');
    expect(bytes.every((b) => b === 0)).toBe(true);
    const b = await roomKeyFromRaw(raw(7), '!r:x');
    const other = await roomKeyFromRaw(raw(8), '!r:x');
    const otherRoom = await roomKeyFromRaw(raw(7), '!s:x');
    expect(a.check).toBe(b.check);
    expect(a.fingerprint).toBe(b.fingerprint);
    expect(other.check).not.toBe(a.check);
    expect(other.fingerprint).not.toBe(a.fingerprint);
    expect(otherRoom.check).not.toBe(a.check);
    expect(a.check).toMatch(/^[A-Za-z0-9_-]{22}$/); // 128 bits, base64url
    expect(a.fingerprint).toMatch(/^\d{3} \d{3} \d{3} \d{3}$/);
    // The check is not the fingerprint's digits in disguise: independent labels.
    expect(a.check).not.toContain(a.fingerprint.replace(/ /g, ''));
  });

  it('the check is HMAC-SHA256 of the label under the raw key, truncated to 128 bits', async () => {
    const { createHmac } = await import('node:crypto');
    const expected = createHmac('sha256', Buffer.from(raw(7))).update('confab/v1/key-check\u0000!r:x').digest().subarray(0, 16);
    expect((await roomKeyFromRaw(raw(7), '!r:x')).check).toBe(Buffer.from(expected).toString('base64url'));
  });

  it('reads 64 bits as twelve digits', () => {
    expect(fingerprintDigits(new Uint8Array(32))).toBe('000 000 000 000');
    const d = new Uint8Array(32);
    d[7] = 1;
    expect(fingerprintDigits(d)).toBe('000 000 000 001');
  });

  it('the key from the passphrase encrypts what the plain deriveRoomKey decrypts', async () => {
    const m = await deriveRoomKeyMaterial('pass', '!r:x', 1000);
    const k = await deriveRoomKey('pass', '!r:x', 1000);
    const ctx = { roomId: '!r:x', userId: '@a:x', deviceId: 'D', kind: 'text' };
    expect(await openJson(k, await sealJson(m.key, { x: 1 }, ctx), ctx)).toEqual({ x: 1 });
    expect((await deriveRoomKeyMaterial('pass', '!r:x', 1000)).check).toBe(m.check);
    expect((await deriveRoomKeyMaterial('other', '!r:x', 1000)).check).not.toBe(m.check);
  });
});
