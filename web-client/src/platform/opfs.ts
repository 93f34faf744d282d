/**
 * Received files go to the Origin Private File System: each chunk is appended to a file on disk
 * as it arrives, so a 2 GB file costs the page no more memory than a 2 MB one, and the verified
 * file is handed out as a disk-backed File. Browsers without OPFS writable streams (Safari without
 * `createWritable`, private windows without OPFS) fall back to memory, with a size limit per file
 * that the receiver is shown (state/browserSupport.ts).
 */
import type { FileSink, FileStore } from '../files/chunks';
import { memoryFileStore } from '../files/memoryStore';
import { chooseFileStore, MEMORY_FILE_LIMIT } from '../state/browserSupport';

const DIR = 'confab-transfers';

/** The transfers folder, and whether a file handle there can be written as a stream. */
async function probeTransfersDir(): Promise<{ dir: FileSystemDirectoryHandle | null; createWritable: boolean }> {
  try {
    const root = await navigator.storage?.getDirectory?.();
    if (!root) return { dir: null, createWritable: false };
    const dir = await root.getDirectoryHandle(DIR, { create: true });
    // A probe: createWritable is the part that some engines lack.
    const probe = await dir.getFileHandle('.probe', { create: true });
    const createWritable = typeof (probe as FileSystemFileHandle & { createWritable?: unknown }).createWritable === 'function';
    await dir.removeEntry('.probe');
    return { dir, createWritable };
  } catch {
    return { dir: null, createWritable: false }; // e.g. a private window, where OPFS is refused
  }
}

/**
 * Each page writes under its own folder and holds a Web Lock named after it for its whole life.
 * Folders whose lock nobody holds belong to pages that closed mid-transfer: they are removed, and
 * another tab's transfer under way is never touched.
 */
async function pageDir(root: FileSystemDirectoryHandle): Promise<FileSystemDirectoryHandle> {
  const id = [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, '0')).join('');
  const locks = navigator.locks;
  if (locks) {
    await new Promise<void>((held) => void locks.request(`${DIR}/${id}`, () => (held(), new Promise<never>(() => undefined))));
    const live = new Set(((await locks.query()).held ?? []).map((l) => l.name));
    const names: string[] = [];
    for await (const name of (root as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(name);
    await Promise.all(names.filter((n) => !live.has(`${DIR}/${n}`)).map((n) => root.removeEntry(n, { recursive: true }).catch(() => undefined)));
  }
  return root.getDirectoryHandle(id, { create: true });
}

export async function browserFileStore(): Promise<FileStore> {
  const { dir: root, createWritable } = await probeTransfersDir();
  const choice = chooseFileStore({ directory: root !== null, createWritable });
  // (`!root` only for the compiler: the choice is OPFS only with a directory.)
  if (choice.kind === 'memory' || !root) return memoryFileStore(MEMORY_FILE_LIMIT);
  const dir = await pageDir(root).catch(() => root);
  return {
    create: async (id) => {
      const handle = await dir.getFileHandle(id, { create: true });
      const writable = await handle.createWritable();
      const sink: FileSink = {
        write: (d) => writable.write(d as BufferSource),
        commit: async () => {
          await writable.close();
          return handle.getFile();
        },
        discard: async () => {
          await writable.abort().catch(() => undefined);
          await dir.removeEntry(id).catch(() => undefined);
        },
      };
      return sink;
    },
  };
}
