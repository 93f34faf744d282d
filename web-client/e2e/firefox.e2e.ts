/**
 * Firefox too: a Firefox ESR page (puppeteer-core over WebDriver BiDi, see firefox.ts) and a
 * Chromium page in one room, through the same homeserver. Firefox creates the room and the invite
 * link, Chromium joins with it; each decodes the other's video and receives its audio, a chat
 * message goes each way and is shown decrypted with the sender's encrypted name, and a file goes
 * each way over the data channel, verified by its SHA-256 (Firefox writes it to OPFS).
 */
import { expect, test } from '@playwright/test';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { diagnostics, inRoom, joinWithLink, participant, sendChat, type Participant } from './helpers';
import { createRoom, firefoxDiagnostics, firefoxParticipant, inviteLink, sendChat as firefoxSendChat, type FirefoxParticipant } from './firefox';
import type { PeerStats } from './helpers';
import type { ElementHandle } from 'puppeteer-core';

/** One side of the call, whichever browser drives it: its name and a way to run code in its page. */
interface Side {
  name: string;
  run<R>(fn: () => R | Promise<R>): Promise<R>;
}

const chromiumSide = (p: Participant): Side => ({ name: p.name, run: (fn) => p.page.evaluate(fn) });
const firefoxSide = (p: FirefoxParticipant): Side => ({ name: p.name, run: (fn) => p.page.evaluate(fn) as Promise<never> });

const key = (s: Side) =>
  s.run(() => {
    const st = window.__confab!.state() as { me: { userId: string; deviceId: string } };
    return `${st.me.userId}|${st.me.deviceId}`;
  });
const stats = (s: Side) => s.run(() => window.__confab!.stats() as Promise<Record<string, PeerStats>>);
const texts = (s: Side) =>
  s.run(() => (window.__confab!.state() as { timeline: Array<{ kind: string; text?: string; status: string }> }).timeline.filter((i) => i.kind === 'text' && i.status === 'ok').map((i) => i.text!));
const shown = (s: Side) => s.run(() => [...document.querySelectorAll('[data-testid="chat-message"]')].map((m) => m.textContent ?? ''));

/**
 * Waits until `to` decodes video from `from` and receives its audio, then until more frames have
 * been decoded: a stream that stalled after its first frames would pass the first wait alone.
 */
async function decodes(to: Side, from: Side): Promise<void> {
  const fromKey = await key(from);
  const inbound = async () => (await stats(to))[fromKey];
  const describe = (r: PeerStats | undefined) => (r ? `frames=${r.framesDecoded} audio=${r.audioBytes} pc=${r.connection} ice=${r.ice}` : 'no peer connection');
  await expect
    .poll(async () => {
      const r = await inbound();
      return r && r.framesDecoded > 0 && r.audioBytes > 0 ? 'media' : `${to.name}<-${from.name}: ${describe(r)}`;
    }, { timeout: 60_000 })
    .toBe('media');
  const first = await inbound();
  await expect
    .poll(async () => {
      const r = await inbound();
      return (r?.framesDecoded ?? 0) > first!.framesDecoded + 10 && (r?.audioBytes ?? 0) > first!.audioBytes ? 'growing' : `${to.name}<-${from.name} stalled at ${describe(r)}`;
    }, { timeout: 30_000 })
    .toBe('growing');
}

let chromium: Participant | null = null;
let firefox: FirefoxParticipant | null = null;
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) {
    if (chromium) console.log(await diagnostics(chromium));
    if (firefox) console.log(await firefoxDiagnostics(firefox));
  }
  await chromium?.context.close();
  await firefox?.browser.close();
  chromium = firefox = null;
});

/** The state of the file card for `sha` on a page: 'done' only once the received bytes matched the hash. */
const fileState = (s: Side, sha: string) =>
  s.run(() => [...document.querySelectorAll('[data-testid="file-card"]')].map((c) => `${c.getAttribute('data-sha256')}:${c.getAttribute('data-state')}`)).then((all) => all.find((c) => c.startsWith(`${sha}:`))?.split(':')[1] ?? 'no card');

test('Firefox ESR and Chromium: join by invite link, a two-way call, encrypted chat and files both ways', async ({ browser, baseURL }, testInfo) => {
  firefox = await firefoxParticipant('Fiona');
  chromium = await participant(browser, 'Chris');
  const ff = firefoxSide(firefox);
  const cr = chromiumSide(chromium);

  await createRoom(firefox, baseURL!);
  const link = await inviteLink(firefox);
  expect(link).toMatch(/#\/join\/[^/]+\/[^/]+\/[^/?]+$/);
  await joinWithLink(chromium, link);
  await inRoom(chromium);

  await decodes(cr, ff);
  await decodes(ff, cr);

  await firefoxSendChat(firefox, 'hello from firefox');
  await expect.poll(() => texts(cr)).toEqual(['hello from firefox']);
  await sendChat(chromium, 'hello from chromium');
  for (const side of [ff, cr]) await expect.poll(() => texts(side)).toEqual(['hello from firefox', 'hello from chromium']);
  // Shown decrypted, under the names each sent the other inside the encrypted channel.
  await expect(chromium.page.getByTestId('chat-message').filter({ hasText: 'hello from firefox' })).toContainText('Fiona');
  await expect.poll(async () => (await shown(ff)).find((m) => m.includes('hello from chromium')) ?? 'not shown').toContain('Chris');

  // Files, both ways: 2 MB from Chromium, 1 MB from Firefox (through its file input, over BiDi).
  const toFirefox = randomBytes(2 * 1024 * 1024 + 7);
  const toFirefoxSha = createHash('sha256').update(toFirefox).digest('hex');
  await expect(chromium.page.getByRole('button', { name: 'Share file', exact: true })).toBeEnabled(); // channel open
  await chromium.page.locator('#file-input').setInputFiles({ name: 'to-firefox.bin', mimeType: 'application/octet-stream', buffer: toFirefox });
  await expect.poll(() => fileState(ff, toFirefoxSha), { timeout: 60_000 }).toBe('done');
  // Firefox took the Origin Private File System path, not the memory fallback: the file is on disk there.
  const opfsSizes = await ff.run(async () => {
    const sizes: number[] = [];
    const transfers = await (await navigator.storage.getDirectory()).getDirectoryHandle('confab-transfers');
    for await (const page of (transfers as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) {
      if (page.kind !== 'directory') continue;
      for await (const f of (page as unknown as { values(): AsyncIterable<FileSystemHandle> }).values()) if (f.kind === 'file') sizes.push((await (f as FileSystemFileHandle).getFile()).size);
    }
    return sizes;
  });
  expect(opfsSizes).toContain(toFirefox.length);
  await expect(chromium.page.getByTestId('file-delivery')).toHaveAttribute('data-state', 'verified');

  const toChromium = randomBytes(1024 * 1024 + 3);
  const toChromiumSha = createHash('sha256').update(toChromium).digest('hex');
  const path = testInfo.outputPath('to-chromium.bin');
  await writeFile(path, toChromium);
  const input = await firefox.page.waitForSelector('#file-input:not([disabled])');
  await (input as ElementHandle<HTMLInputElement>).uploadFile(path);
  await expect.poll(() => fileState(cr, toChromiumSha), { timeout: 60_000 }).toBe('done');
});
