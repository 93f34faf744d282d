/**
 * Reach and comfort: the installable app (manifest, a service worker that caches the shell and
 * never an API answer, so the home page opens offline), the title badge and notifications while
 * the tab is hidden, and the German catalog chosen from the browser's language.
 */
import { expect, test, type Page } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, participant, sendChat, type Participant } from './helpers';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('installable: manifest and icons, and a service worker that caches the shell but no API answer', async ({ browser }) => {
  const alice = await participant(browser, 'Alice');
  people = [alice];
  const page = alice.page;
  await createRoom(alice); // the app calls the API (session, room, config) with the worker in place
  const manifest = await page.evaluate(async () => {
    const href = document.querySelector<HTMLLinkElement>('link[rel=manifest]')!.href;
    const res = await fetch(href);
    return { type: res.headers.get('content-type'), body: (await res.json()) as { name: string; icons: Array<{ src: string; sizes: string }> } };
  });
  expect(manifest.body.name).toBe('Confab');
  expect(manifest.body.icons.map((i) => i.sizes)).toEqual(expect.arrayContaining(['192x192', '512x512']));
  await page.waitForFunction(async () => (await navigator.serviceWorker.getRegistration())?.active?.state === 'activated');
  const cached = await page.evaluate(async () => {
    const urls: string[] = [];
    for (const name of await caches.keys()) for (const req of await (await caches.open(name)).keys()) urls.push(req.url);
    return urls;
  });
  expect(cached.some((u) => /\/assets\/index-[\w-]+\.js$/.test(u))).toBe(true);
  expect(cached.filter((u) => u.includes('/_confab/'))).toEqual([]);

  // The shell opens with the network gone.
  await page.goto('/#/');
  await expect(page.getByRole('button', { name: 'Create a room' })).toBeVisible();
  await alice.context.setOffline(true);
  await page.reload();
  await expect(page.getByRole('heading', { name: 'Confab', level: 1 })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Create a room' })).toBeVisible();
  await alice.context.setOffline(false);
});

/** Makes the page believe it is hidden (a headless tab is always visible). */
function hide(page: Page, hidden: boolean): Promise<void> {
  return page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

test('while the tab is hidden, joins and messages badge the title and notify, without the text', async ({ browser }) => {
  const alice = await participant(browser, 'Alice');
  const bob = await participant(browser, 'Bob', { permissions: ['camera', 'microphone', 'notifications'] });
  const carol = await participant(browser, 'Carol');
  people = [alice, bob, carol];
  await bob.context.addInitScript(() => {
    const shown: Array<{ title: string; body: string | undefined }> = [];
    (window as unknown as { __notifications: typeof shown }).__notifications = shown;
    const Native = window.Notification;
    window.Notification = class extends Native {
      constructor(title: string, options?: NotificationOptions) {
        super(title, options);
        shown.push({ title, body: options?.body });
      }
    } as typeof Notification;
  });
  await createRoom(alice);
  const link = await inviteLink(alice);
  await joinWithLink(bob, link);
  await inRoom(bob);
  const notes = () => bob.page.evaluate(() => (window as unknown as { __notifications: unknown[] }).__notifications);
  await expect(bob.page.getByTestId('enable-notifications')).toHaveCount(0); // already allowed
  await expect(bob.page).toHaveTitle('Confab');

  // Visible: nothing.
  await sendChat(alice, 'seen while looking');
  await expect(bob.page.getByTestId('chat-live')).toHaveText('Alice: seen while looking');
  expect(await notes()).toEqual([]);

  await hide(bob.page, true);
  await sendChat(alice, 'the text stays out of notifications');
  await expect(bob.page).toHaveTitle('(1) Confab');
  await joinWithLink(carol, link);
  await inRoom(carol);
  await expect(bob.page).toHaveTitle('(2) Confab');
  await expect.poll(notes).toEqual([
    { title: 'Confab', body: 'New message from Alice' },
    { title: 'Confab', body: 'Carol joined the room' },
  ]);
  await hide(bob.page, false);
  await expect(bob.page).toHaveTitle('Confab');
});

test('the app speaks German to a browser that prefers it', async ({ browser }) => {
  const anna = await participant(browser, 'Anna', { locale: 'de-DE' });
  people = [anna];
  await anna.page.goto('/#/');
  await expect(anna.page.getByRole('button', { name: 'Raum erstellen' })).toBeVisible();
  await expect(anna.page.locator('html')).toHaveAttribute('lang', 'de');
  await anna.page.getByLabel(/Anzeigename/).fill('Anna');
  await anna.page.getByRole('button', { name: 'Raum erstellen' }).click();
  await expect(anna.page.getByRole('heading', { name: 'Dem Raum beitreten' })).toBeVisible();
  await anna.page.getByRole('button', { name: 'Beitreten', exact: true }).click();
  await inRoom(anna);
  await expect(anna.page.getByRole('navigation', { name: 'Anrufsteuerung' })).toBeVisible();
  await expect(anna.page.getByTestId('e2ee')).toContainText('Ende-zu-Ende-verschlüsselt');
});
