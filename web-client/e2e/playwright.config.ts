import { defineConfig } from '@playwright/test';
import { chmodSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Browser tests against a real homeserver that serves this app's dist/. With CONFAB_URL set they use
 * that server; otherwise this config starts `../target/debug/confab serve` itself (built by
 * `make browser-test`) on a free loopback port, with a fresh data directory — so a fresh embedded
 * Postgres cluster — per run, and stops it with SIGTERM so the cluster shuts down cleanly.
 * Debian's Chromium is driven through playwright-core: no browser download.
 *
 * Playwright loads this file in the runner and again in every worker, so what is chosen here (port,
 * data dir) is put in the environment, which the workers inherit: all of them agree on one server.
 */
const webClient = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(webClient, '..');

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? ok(addr.port) : fail(new Error('no port'))));
    });
  });
}

const external = process.env.CONFAB_URL;
if (!external) {
  process.env.CONFAB_E2E_PORT ??= String(await freePort());
  if (!process.env.CONFAB_E2E_DATA_DIR) {
    const dir = mkdtempSync(join(tmpdir(), 'confab-e2e-'));
    // Run as root, the server starts Postgres as an unprivileged user, who must be able to reach
    // <dir>/postgres (which the server itself keeps at 0700).
    chmodSync(dir, 0o711);
    process.env.CONFAB_E2E_DATA_DIR = dir;
  }
}
const port = process.env.CONFAB_E2E_PORT;
const dataDir = process.env.CONFAB_E2E_DATA_DIR;
const url = external ?? `http://127.0.0.1:${port}`;

export default defineConfig({
  testDir: '.',
  testMatch: /.*\.e2e\.ts$/,
  timeout: 120_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1, // 2 cores: three Chromium pages with fake camera each is already a lot
  reporter: [['list']],
  webServer: external
    ? undefined
    : {
        command: `${join(repo, 'target/debug/confab')} serve`,
        cwd: repo,
        url: `${url}/health`,
        env: {
          CONFAB__SERVER__LISTEN: `127.0.0.1:${port}`,
          CONFAB__SERVER__NAME: `127.0.0.1:${port}`,
          CONFAB__SERVER__PUBLIC_URL: url,
          CONFAB__SERVER__DATA_DIR: dataDir!,
          CONFAB__SERVER__WEB_CLIENT_DIR: join(webClient, 'dist'),
          // No admin listener (no browser test uses it): the other servers the tests start
          // would want the same default port, as would a server already running here.
          CONFAB__ADMIN__LISTEN: '',
          // federation.e2e.ts federates a second server with this one, both on loopback over HTTP.
          CONFAB__FEDERATION__ALLOW_INSECURE_HTTP: 'true',
          CONFAB__FEDERATION__ALLOW_PRIVATE_ADDRESSES: 'true',
          RUST_LOG: process.env.RUST_LOG ?? 'warn',
        },
        reuseExistingServer: false,
        timeout: 60_000,
        stdout: 'pipe', // warnings and errors only (RUST_LOG above)
        stderr: 'pipe',
        gracefulShutdown: { signal: 'SIGTERM', timeout: 15_000 },
      },
  use: {
    baseURL: url,
    // A missing element fails its step with a clear message instead of eating the whole test timeout.
    actionTimeout: 30_000,
    navigationTimeout: 30_000,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-background-networking',
        '--use-fake-ui-for-media-stream',
        '--use-fake-device-for-media-stream',
        '--allow-loopback-in-peer-connection',
        '--disable-gpu',
        '--auto-accept-this-tab-capture',
        '--autoplay-policy=no-user-gesture-required',
      ],
    },
    permissions: ['camera', 'microphone', 'clipboard-read', 'clipboard-write'],
  },
});
