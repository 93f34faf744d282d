import { expect, type Browser, type BrowserContext, type Page } from '@playwright/test';

export interface Participant {
  context: BrowserContext;
  page: Page;
  name: string;
}

/** A separate browser profile per participant: its own localStorage, so its own guest session. */
export async function participant(browser: Browser, name: string): Promise<Participant> {
  const context = await browser.newContext();
  // Keep handles on the page's WebSockets so a test can cut them like a network drop would.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    const all: WebSocket[] = [];
    (window as unknown as { __sockets: WebSocket[] }).__sockets = all;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        all.push(this);
      }
    } as typeof WebSocket;
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] pageerror`, e.message));
  return { context, page, name };
}

export async function inRoom(p: Participant): Promise<void> {
  await p.page.waitForFunction(() => {
    const s = window.__confab?.state() as { connection?: string } | undefined;
    return s?.connection === 'online';
  });
}

export async function createRoom(p: Participant): Promise<string> {
  await p.page.goto('/#/');
  await p.page.getByLabel(/Display name/).fill(p.name);
  await p.page.getByRole('button', { name: 'Create a room' }).click();
  await p.page.getByRole('heading', { name: 'Join the room' }).waitFor();
  await p.page.getByRole('button', { name: 'Join', exact: true }).click();
  await inRoom(p);
  const url = p.page.url();
  return decodeURIComponent(url.slice(url.indexOf('#/room/') + 7).split('?')[0]!);
}

export async function inviteLink(host: Participant, withSecret = true): Promise<string> {
  const page = host.page;
  if ((await page.getByTestId('create-invite').count()) === 0) await page.getByTestId('toggle-host').click();
  const box = page.getByLabel(/Put the encryption secret in the link/);
  if ((await box.isChecked()) !== withSecret) await box.click();
  const before = await page.getByTestId('invite-link').inputValue().catch(() => '');
  await page.getByTestId('create-invite').click();
  await expect.poll(() => page.getByTestId('invite-link').inputValue()).not.toBe(before);
  return page.getByTestId('invite-link').inputValue();
}

export async function joinWithLink(p: Participant, link: string, opts: { passphrase?: string; query?: string } = {}): Promise<void> {
  await p.page.goto(link + `?name=${encodeURIComponent(p.name)}${opts.query ?? ''}`);
  if (opts.passphrase !== undefined) await p.page.getByLabel(/Passphrase/).fill(opts.passphrase);
  await p.page.getByRole('button', { name: 'Join', exact: true }).click();
}

export async function sendChat(p: Participant, text: string): Promise<void> {
  await p.page.getByLabel('Message', { exact: true }).fill(text);
  await p.page.getByRole('button', { name: 'Send' }).click();
}

export function texts(p: Participant): Promise<string[]> {
  return p.page.evaluate(() => {
    const s = window.__confab!.state() as { timeline: Array<{ kind: string; text?: string; status: string }> };
    return s.timeline.filter((i) => i.kind === 'text' && i.status === 'ok').map((i) => i.text!);
  });
}

export function myKey(p: Participant): Promise<string> {
  return p.page.evaluate(() => {
    const s = window.__confab!.state() as { me: { userId: string; deviceId: string } };
    return `${s.me.userId}|${s.me.deviceId}`;
  });
}

/** Inbound media from each peer per getStats: decoded video frames and received audio bytes. */
export function stats(p: Participant): Promise<Record<string, { framesDecoded: number; audioBytes: number; videoStreams: number }>> {
  return p.page.evaluate(() => window.__confab!.stats() as Promise<Record<string, { framesDecoded: number; audioBytes: number; videoStreams: number }>>);
}

export async function receivesMediaFromAll(p: Participant, others: Participant[]): Promise<void> {
  const keys = await Promise.all(others.map(myKey));
  await expect
    .poll(async () => {
      const s = await stats(p);
      return keys.every((k) => (s[k]?.framesDecoded ?? 0) > 0 && (s[k]?.audioBytes ?? 0) > 0);
    }, { timeout: 60_000 })
    .toBe(true);
}
