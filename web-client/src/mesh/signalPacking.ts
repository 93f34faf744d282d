/**
 * Signal envelopes are deflated before they are sealed when they are large: an offer with a
 * camera, a screen share and its sound is over 16 KiB of SDP once encrypted and base64-encoded,
 * which is the server's payload limit; SDP is repetitive text and deflates to about a quarter.
 * Uses the Compression Streams API (browsers, Node 18+).
 */
import { base64urlDecode, base64urlEncode, utf8 } from '../crypto/encoding';
import type { SignalEnvelope } from './mesh';

/** Envelopes under this many bytes of JSON go as they are. */
export const PACK_ABOVE = 4096;

export type PackedEnvelope = SignalEnvelope | { v: 1; sid: string; to: string | null; z: string };

async function pipe(data: Uint8Array, stream: CompressionStream | DecompressionStream): Promise<Uint8Array> {
  const out = new Response(new Blob([data as BlobPart]).stream().pipeThrough(stream));
  return new Uint8Array(await out.arrayBuffer());
}

export async function packSignal(env: SignalEnvelope): Promise<PackedEnvelope> {
  const json = JSON.stringify(env.msg);
  if (json.length <= PACK_ABOVE) return env;
  const z = await pipe(utf8(json), new CompressionStream('deflate-raw'));
  return { v: 1, sid: env.sid, to: env.to, z: base64urlEncode(z) };
}

/** The envelope with its message; throws on a packed message that does not inflate to JSON. */
export async function unpackSignal(env: PackedEnvelope): Promise<SignalEnvelope> {
  if (!('z' in env)) return env;
  if (typeof env.z !== 'string') throw new Error('bad packed signal');
  const json = new TextDecoder('utf-8', { fatal: true }).decode(await pipe(base64urlDecode(env.z), new DecompressionStream('deflate-raw')));
  return { v: 1, sid: env.sid, to: env.to, msg: JSON.parse(json) as SignalEnvelope['msg'] };
}
