/**
 * A FileStore in memory: for unit tests, and for browsers without writable streams in the Origin
 * Private File System, where `maxBytes` bounds each file (see state/browserSupport.ts).
 */
import type { FileSink, FileStore } from './chunks';

export function memoryFileStore(maxBytes?: number): FileStore & { live(): number } {
  let live = 0;
  return {
    ...(maxBytes === undefined ? {} : { maxBytes }),
    live: () => live,
    create: async () => {
      let parts: Uint8Array[] = [];
      let held = 0;
      live++;
      const sink: FileSink = {
        // A copy: the caller reuses its buffer once the write resolved.
        write: async (d) => {
          // The offer's size was checked against the limit; this holds the sink to it whatever it is fed.
          if (maxBytes !== undefined && held + d.length > maxBytes) throw new Error(`more than ${maxBytes} bytes for memory`);
          held += d.length;
          parts.push(d.slice());
        },
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
