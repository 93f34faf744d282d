/**
 * QR codes of invite links, drawn by a kept library (`qrcode-generator`, MIT), which is loaded on
 * first use only: it stays out of the JavaScript every visitor loads first. No DOM here: the
 * modules come out as a matrix and an SVG path, which a component renders.
 */

/** The dark (true) and light modules of a QR code of `text`, row by row (error correction M). */
export async function qrModules(text: string): Promise<boolean[][]> {
  const { default: qrcode } = await import('qrcode-generator');
  // Links are ASCII, but a name in the query may not be: the library keeps only the low byte of
  // each UTF-16 unit, so give it UTF-8 bytes, as scanners expect.
  qrcode.stringToBytes = (s: string) => Array.from(new TextEncoder().encode(s));
  const qr = qrcode(0, 'M');
  qr.addData(text, 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  return Array.from({ length: n }, (_, row) => Array.from({ length: n }, (_, col) => qr.isDark(row, col)));
}

/**
 * An SVG path of the dark modules, one unit per module, shifted by a quiet zone of `margin`
 * modules (the four the standard asks for by default); the view box is `size` units wide.
 */
export function qrPath(modules: boolean[][], margin = 4): { path: string; size: number } {
  let path = '';
  modules.forEach((row, y) => {
    let x = 0;
    while (x < row.length) {
      if (!row[x]) {
        x++;
        continue;
      }
      // One rectangle per run of dark modules in a row keeps the path short.
      const start = x;
      while (x < row.length && row[x]) x++;
      path += `M${start + margin} ${y + margin}h${x - start}v1h-${x - start}z`;
    }
  });
  return { path, size: modules.length + 2 * margin };
}
