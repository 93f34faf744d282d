import { describe, expect, it } from 'vitest';
import { canChooseSpeaker, captureScreen, chooseFileStore, MEMORY_FILE_LIMIT } from './browserSupport';

describe('received files', () => {
  it('go to OPFS where a file handle can be written as a stream (Chromium, Firefox)', () => {
    expect(chooseFileStore({ directory: true, createWritable: true })).toEqual({ kind: 'opfs' });
  });
  it('stay in memory, up to a limit, without createWritable (Safari) or without OPFS at all (private windows)', () => {
    expect(chooseFileStore({ directory: true, createWritable: false })).toEqual({ kind: 'memory', maxBytes: MEMORY_FILE_LIMIT });
    expect(chooseFileStore({ directory: false, createWritable: false })).toEqual({ kind: 'memory', maxBytes: MEMORY_FILE_LIMIT });
    expect(MEMORY_FILE_LIMIT).toBe(256 * 1024 * 1024);
  });
});

describe('speaker choice', () => {
  it('is offered only where media elements have setSinkId', () => {
    expect(canChooseSpeaker({ setSinkId: async () => undefined })).toBe(true);
    expect(canChooseSpeaker({ play: () => undefined })).toBe(false); // Safari
    expect(canChooseSpeaker({ setSinkId: true })).toBe(false);
    expect(canChooseSpeaker(undefined)).toBe(false); // no DOM
  });
});

const stream = (kinds: string[]) => ({ kinds, getAudioTracks: () => kinds.filter((k) => k === 'audio') });
const failure = (name: string) => Object.assign(new Error(name), { name });

describe('screen share', () => {
  it('asks for the sound once and says whether it came (Chromium with a tab; Firefox and Safari with the picture only)', async () => {
    for (const kinds of [['video', 'audio'], ['video']]) {
      const asked: DisplayMediaStreamOptions[] = [];
      const got = await captureScreen(async (c) => (asked.push(c), stream(kinds)));
      expect(asked).toEqual([{ video: true, audio: true }]);
      expect(got.withSound).toBe(kinds.includes('audio'));
      expect(got.stream.kinds).toEqual(kinds);
    }
  });

  it('asks again for the picture alone where the engine rejects the audio constraint', async () => {
    for (const name of ['TypeError', 'NotSupportedError']) {
      const asked: DisplayMediaStreamOptions[] = [];
      const got = await captureScreen(async (c) => {
        asked.push(c);
        if (c.audio) throw name === 'TypeError' ? new TypeError('audio') : failure(name);
        return stream(['video']);
      });
      expect(asked).toEqual([{ video: true, audio: true }, { video: true }]);
      expect(got.withSound).toBe(false);
    }
  });

  it('takes a refusal as final: the user is not asked twice', async () => {
    const asked: DisplayMediaStreamOptions[] = [];
    await expect(captureScreen(async (c) => (asked.push(c), Promise.reject(failure('NotAllowedError'))))).rejects.toMatchObject({ name: 'NotAllowedError' });
    expect(asked).toHaveLength(1);
  });
});
