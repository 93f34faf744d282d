/**
 * Incremental SHA-256 with hash-wasm (a kept library; Web Crypto can only digest a whole buffer),
 * loaded on first use, and the hash of a whole source read slice by slice.
 */
import { piecesOf, type ByteSource, type Hasher } from './chunks';

export async function createSha256(): Promise<Hasher> {
  const { createSHA256 } = await import('hash-wasm');
  const h = await createSHA256();
  h.init();
  return { update: (d) => void h.update(d), digest: () => h.digest('hex') };
}

/** Reads `source` in slices of `sliceBytes`, so a file of any size is hashed in bounded memory. */
export async function hashSource(source: ByteSource, create: () => Promise<Hasher> = createSha256, sliceBytes = 4 * 1024 * 1024): Promise<string> {
  const h = await create();
  for await (const piece of piecesOf(source, 0, sliceBytes)) h.update(piece);
  return h.digest();
}
