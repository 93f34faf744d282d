/** A FileStore in memory: for unit tests, and for browsers without the Origin Private File System. */
import type { FileSink, FileStore } from './chunks';

export function memoryFileStore(): FileStore & { live(): number } {
  let live = 0;
  return {
    live: () => live,
    create: async () => {
      let parts: Uint8Array[] = [];
      live++;
      const sink: FileSink = {
        // A copy: the caller reuses its buffer once the write resolved.
        write: async (d) => void parts.push(d.slice()),
        commit: async () => {
          live--;
          const blob = new Blob(parts as BlobPart[]);
          parts = [];
          return blob;
        },
        discard: async () => {
          live--;
          parts = [];
        },
      };
      return sink;
    },
  };
}
