import { describe, expect, it } from 'vitest';
import { packSignal, PACK_ABOVE, unpackSignal } from './signalPacking';
import type { SignalEnvelope } from './mesh';

describe('signal packing', () => {
  it('leaves small envelopes alone and deflates large ones, losslessly', async () => {
    const small: SignalEnvelope = { v: 1, sid: 's', to: null, msg: { candidate: null } };
    expect(await packSignal(small)).toBe(small);
    const sdp = Array.from({ length: 400 }, (_, i) => `a=rtpmap:${96 + (i % 30)} VP8/90000\r\na=rtcp-fb:${i} nack pli\r\n`).join('');
    const big: SignalEnvelope = { v: 1, sid: 's', to: 't', msg: { description: { type: 'offer', sdp } } };
    const packed = await packSignal(big);
    expect('z' in packed).toBe(true);
    expect(JSON.stringify(packed).length).toBeLessThan(JSON.stringify(big).length / 3);
    expect(JSON.stringify(big).length).toBeGreaterThan(PACK_ABOVE);
    expect(await unpackSignal(packed)).toEqual(big);
  });
  it('refuses a packed message that is not deflated JSON', async () => {
    await expect(unpackSignal({ v: 1, sid: 's', to: null, z: 'bm90IGRlZmxhdGU' })).rejects.toThrow();
  });
});
