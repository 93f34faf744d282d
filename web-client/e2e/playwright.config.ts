import { defineConfig } from '@playwright/test';

/**
 * Browser tests against a running homeserver (CONFAB_URL, e.g. http://127.0.0.1:8008) that serves
 * this app's dist/. Debian's Chromium is driven through playwright-core: no browser download.
 */
const url = process.env.CONFAB_URL;
if (!url) throw new Error('Set CONFAB_URL to a running homeserver that serves web-client/dist, e.g. CONFAB_URL=http://127.0.0.1:8008');

export default defineConfig({
  testDir: '.',
  testMatch: /.*\.e2e\.ts$/,
  timeout: 120_000,
  expect: { timeout: 30_000 },
  fullyParallel: false,
  workers: 1, // 2 cores: three Chromium pages with fake camera each is already a lot
  reporter: [['list']],
  use: {
    baseURL: url,
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
