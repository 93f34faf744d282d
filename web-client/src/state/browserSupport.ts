/**
 * Where browser engines differ in what the client uses, and what it does without it: speaker
 * choice (`setSinkId`), received files on disk (OPFS writable streams), the sound of a screen share.
 * Each rule takes what the caller found by feature detection (never the user agent), so a unit test
 * decides it for every engine without a DOM. README.md "Browser support" lists the outcome.
 */

/**
 * The largest received file kept in memory, where the Origin Private File System cannot be written
 * as a stream. The tab holds the chunks and then the Blob made of them (twice the file at the
 * peak), and mobile browsers end tabs that grow much past a gigabyte.
 */
export const MEMORY_FILE_LIMIT = 256 * 1024 * 1024;

export type FileStoreChoice = { kind: 'opfs' } | { kind: 'memory'; maxBytes: number };

/**
 * OPFS when the page got its directory and a file handle there has `createWritable` (Chromium,
 * Firefox; Safari versions without it offer only `createSyncAccessHandle`, in workers); else memory,
 * with a size limit the receiver is told about.
 */
export function chooseFileStore(found: { directory: boolean; createWritable: boolean }): FileStoreChoice {
  return found.directory && found.createWritable ? { kind: 'opfs' } : { kind: 'memory', maxBytes: MEMORY_FILE_LIMIT };
}

/** Whether the speaker can be chosen: `HTMLMediaElement.prototype.setSinkId` (absent in Safari). */
export function canChooseSpeaker(mediaElementPrototype: object | undefined): boolean {
  return !!mediaElementPrototype && typeof (mediaElementPrototype as { setSinkId?: unknown }).setSinkId === 'function';
}

export interface ScreenCapture<S> {
  stream: S;
  /** Whether the share carries sound: Chromium gives a tab's (or on some systems the screen's); Firefox and Safari none. */
  withSound: boolean;
}

/**
 * A screen share with its sound where the browser gives it. Asking for `audio: true` is valid
 * everywhere by the specification (an engine without capture of it answers with video only), but
 * an engine that rejects the constraint itself (a TypeError, or NotSupportedError) is asked again
 * for the picture alone. The user's refusal (NotAllowedError) is final: asking again would prompt twice.
 */
export async function captureScreen<S extends { getAudioTracks(): unknown[] }>(getDisplayMedia: (c: DisplayMediaStreamOptions) => Promise<S>): Promise<ScreenCapture<S>> {
  let stream: S;
  try {
    stream = await getDisplayMedia({ video: true, audio: true });
  } catch (err) {
    const name = (err as { name?: unknown } | null)?.name;
    if (name !== 'TypeError' && name !== 'NotSupportedError') throw err;
    stream = await getDisplayMedia({ video: true });
  }
  return { stream, withSound: stream.getAudioTracks().length > 0 };
}
