/**
 * Federation in the browser: a participant whose browser talks only to homeserver A and one that
 * talks only to B (the server the Playwright config started) share a call and encrypted chat in a
 * room on B. A is a second real `confab serve` with its own embedded Postgres, started here.
 */
import { expect, test } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createRoom,
  freePort,
  diagnostics,
  inRoom,
  inviteLink,
  joinWithLink,
  participant,
  receivesMediaFromAll,
  sendChat,
  texts,
  type Participant,
} from './helpers';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let serverA: ChildProcess | undefined;
let dataDirA: string | undefined;
let urlA = '';

test.beforeAll(async () => {
  // Fails rather than skips: a suite run against an outside server must not look complete.
  if (process.env.CONFAB_URL) throw new Error('needs the server the Playwright config starts, to federate with: run it without CONFAB_URL');
  const port = await freePort();
  urlA = `http://127.0.0.1:${port}`;
  dataDirA = mkdtempSync(join(tmpdir(), 'confab-e2e-a-'));
  chmodSync(dataDirA, 0o711); // the embedded Postgres runs as an unprivileged user when root
  serverA = spawn(join(repo, 'target/debug/confab'), ['serve'], {
    cwd: repo,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: {
      ...process.env,
      CONFAB__SERVER__LISTEN: `127.0.0.1:${port}`,
      CONFAB__SERVER__NAME: `127.0.0.1:${port}`,
      CONFAB__SERVER__PUBLIC_URL: urlA,
      CONFAB__SERVER__DATA_DIR: dataDirA,
      CONFAB__SERVER__WEB_CLIENT_DIR: join(repo, 'web-client', 'dist'),
      // No admin listener: it would take the same default port as the other server's.
      CONFAB__ADMIN__LISTEN: '',
      CONFAB__FEDERATION__ALLOW_INSECURE_HTTP: 'true',
      CONFAB__FEDERATION__ALLOW_PRIVATE_ADDRESSES: 'true',
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
    },
  });
  // Ready once /health answers; the poll has a deadline and fails the suite with the reason.
  await expect
    .poll(
      async () => {
        if (serverA?.exitCode !== null) return `exited with ${serverA?.exitCode}`;
        try {
          return (await fetch(`${urlA}/health`)).status;
        } catch {
          return 'not listening yet';
        }
      },
      { timeout: 60_000 },
    )
    .toBe(200);
});

test.afterAll(async () => {
  if (serverA && serverA.exitCode === null) {
    const exited = new Promise((ok) => serverA!.once('exit', ok));
    serverA.kill('SIGTERM'); // the server stops its Postgres cleanly on SIGTERM
    await exited;
  }
  if (dataDirA) rmSync(dataDirA, { recursive: true, force: true });
});

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) {
    for (const p of people) console.log(await diagnostics(p));
  }
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('a user of homeserver A and one of B share a call and encrypted chat in a room on B', async ({ browser }) => {
  const [bea, abe] = (people = await Promise.all(['Bea', 'Abe'].map((n) => participant(browser, n))));
  const roomId = await createRoom(bea!); // on B, the Playwright config's server
  const link = await inviteLink(bea!);
  // Abe's browser talks only to A: the same invite, opened on A's web client.
  const onA = urlA + link.slice(link.indexOf('#'));
  await joinWithLink(abe!, onA);
  await inRoom(abe!);
  expect(new URL(abe!.page.url()).origin).toBe(urlA);
  expect(roomId.endsWith(`:${new URL(link).host}`)).toBe(true);

  // Media flows both ways, negotiated through A and B with the signaling encrypted.
  await receivesMediaFromAll(bea!, [abe!]);
  await receivesMediaFromAll(abe!, [bea!]);

  await sendChat(bea!, 'hello from B');
  await sendChat(abe!, 'hello from A');
  for (const p of [bea!, abe!]) {
    await expect.poll(() => texts(p)).toEqual(['hello from B', 'hello from A']);
  }
  // Names come from the encrypted profiles across servers too.
  await expect(bea!.page.getByTestId('chat-message').filter({ hasText: 'hello from A' })).toContainText('Abe');
  await expect(bea!.page.getByTestId('presence-entry')).toHaveCount(2);
  await expect(abe!.page.getByTestId('presence-entry')).toHaveCount(2);
});
