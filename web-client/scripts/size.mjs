// Prints the gzipped size of the JavaScript the browser loads first (index.html's module entry and
// its static imports/modulepreloads), and fails above the budget. Lazy chunks are listed, not counted.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const BUDGET = 150 * 1024;
const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
if (!existsSync(join(dist, 'index.html'))) {
  console.error('dist/index.html missing: run `npm run build` first');
  process.exit(1);
}
const html = readFileSync(join(dist, 'index.html'), 'utf8');
const initial = new Set();
for (const m of html.matchAll(/<(?:script|link)[^>]+(?:src|href)="([^"]+\.js)"/g)) initial.add(m[1].replace(/^\.?\//, ''));
// Follow static imports of the entry chunks (`import … from "./x.js"` at top level).
const queue = [...initial];
while (queue.length) {
  const file = queue.pop();
  const code = readFileSync(join(dist, file), 'utf8');
  for (const m of code.matchAll(/(?:^|[;\n}])\s*import\s*(?:[\w*{}\s,$]+from\s*)?["']\.\/([^"']+\.js)["']/g)) {
    const dep = join(dirname(file), m[1]).replace(/\\/g, '/');
    if (!initial.has(dep)) {
      initial.add(dep);
      queue.push(dep);
    }
  }
}
let total = 0;
for (const f of initial) {
  const gz = gzipSync(readFileSync(join(dist, f))).length;
  total += gz;
  console.log(`initial  ${(gz / 1024).toFixed(1).padStart(7)} KB gz  ${f}`);
}
const assets = join(dist, 'assets');
for (const f of existsSync(assets) ? readdirSync(assets) : []) {
  const rel = `assets/${f}`;
  if (f.endsWith('.js') && !initial.has(rel)) {
    console.log(`lazy     ${(gzipSync(readFileSync(join(assets, f))).length / 1024).toFixed(1).padStart(7)} KB gz  ${basename(rel)}`);
  }
}
console.log(`initial JavaScript: ${(total / 1024).toFixed(1)} KB gzipped (budget ${BUDGET / 1024} KB)`);
if (total > BUDGET) {
  console.error('over budget');
  process.exit(1);
}
