#!/usr/bin/env node
/**
 * Join latency: the time from opening an invite link (secret in the fragment) to the first decoded
 * video frame from the host, as a guest sees it in Chromium — page load, PBKDF2 key derivation
 * (600,000 iterations), guest session, join, WebSocket, signaling and ICE/DTLS included. The only
 * human step, pressing "Join" on the pre-join screen, is done as soon as the button is there.
 *
 *   node scripts/join-latency.mjs [runs]        starts ../target/debug/confab on a free port with a
 *                                               fresh data dir (build it and dist/ first)
 *   CONFAB_URL=http://127.0.0.1:8008 node scripts/join-latency.mjs
 *
 * Prints each run, the median, and the key derivation alone for reference. Not a test: no limit.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const webClient = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(webClient, '..');
const runs = Number(process.argv[2] ?? 5);

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

async function startServer() {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'confab-latency-'));
  chmodSync(dataDir, 0o711); // the embedded Postgres runs as an unprivileged user when we are root
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(join(repo, 'target/debug/confab'), ['serve'], {
    cwd: repo,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      CONFAB__SERVER__LISTEN: `127.0.0.1:${port}`,
      CONFAB__SERVER__NAME: `127.0.0.1:${port}`,
      CONFAB__SERVER__PUBLIC_URL: url,
      CONFAB__SERVER__DATA_DIR: dataDir,
      CONFAB__SERVER__WEB_CLIENT_DIR: join(webClient, 'dist'),
      CONFAB__ADMIN__LISTEN: '', // not needed, and its default port may be taken
      RUST_LOG: 'warn',
    },
  });
  const exited = new Promise((ok) => child.once('exit', ok));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`confab exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error('confab did not become healthy in 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  // SIGTERM: the server stops its embedded Postgres cleanly before exiting.
  return { url, dataDir, stop: async () => (child.kill('SIGTERM'), await exited) };
}

const server = process.env.CONFAB_URL ? { url: process.env.CONFAB_URL, stop: async () => {} } : await startServer();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--disable-gpu',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const contextOptions = { baseURL: server.url, permissions: ['camera', 'microphone'] };

const online = () => window.__confab?.state()?.connection === 'online';

try {
  // The host: a room with camera and microphone, and an invite link carrying the secret.
  const host = await (await browser.newContext(contextOptions)).newPage();
  await host.goto('/#/');
  await host.getByLabel(/Display name/).fill('Host');
  await host.getByRole('button', { name: 'Create a room' }).click();
  await host.getByRole('button', { name: 'Join', exact: true }).click();
  await host.waitForFunction(online);
  await host.getByTestId('toggle-host').click();
  await host.getByTestId('create-invite').click();
  const link = await host.getByTestId('invite-link').inputValue();
  const hostKey = await host.evaluate(() => {
    const me = window.__confab.state().me;
    return `${me.userId}|${me.deviceId}`;
  });

  const times = [];
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext(contextOptions);
    const guest = await context.newPage();
    const t0 = performance.now();
    await guest.goto(`${link}?name=Guest${i}`);
    await guest.getByRole('button', { name: 'Join', exact: true }).click();
    await guest.waitForFunction(
      async (key) => ((await window.__confab?.stats())?.[key]?.framesDecoded ?? 0) > 0,
      hostKey,
      { polling: 20, timeout: 60_000 },
    );
    const ms = performance.now() - t0;
    times.push(ms);
    console.log(`run ${i + 1}: ${ms.toFixed(0)} ms from opening the invite link to the first decoded remote video frame`);
    await context.close();
  }
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];

  // For reference: the key derivation alone, in the same browser.
  const kdfMs = await host.evaluate(async () => {
    const t = performance.now();
    const base = await crypto.subtle.importKey('raw', new TextEncoder().encode('a passphrase'), 'PBKDF2', false, ['deriveKey']);
    await crypto.subtle.deriveKey(
      { name: 'PBKDF2', hash: 'SHA-256', salt: new TextEncoder().encode('confab/v1/!room:example'), iterations: 600_000 },
      base,
      { name: 'AES-GCM', length: 256 },
      false,
      ['encrypt'],
    );
    return performance.now() - t;
  });
  console.log(`join latency (median of ${runs}): ${median.toFixed(0)} ms; of which PBKDF2 (600,000 iterations) alone takes ~${kdfMs.toFixed(0)} ms`);
} finally {
  await browser.close();
  await server.stop();
}
