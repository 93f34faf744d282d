/**
 * Accessibility: axe-core on every screen (home, pre-join, the room with the chat and host panels
 * open, the Invite panel with its QR code, the ended screen) at desktop and phone widths in both themes, with no serious or critical
 * violation allowed; keyboard shortcuts, the help dialog, focus moving into and out of panels, the
 * theme switch, and a live region that speaks new messages but not replayed history.
 */
import { expect, test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, participant, seriousViolations, sendChat, texts, type Participant } from './helpers';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

const layouts = [
  { name: 'desktop', viewport: { width: 1280, height: 800 } },
  { name: 'phone', viewport: { width: 390, height: 844 } },
] as const;
const themes = ['dark', 'light'] as const;

for (const layout of layouts) {
  for (const theme of themes) {
    test(`axe: no serious or critical violation on any screen (${layout.name}, ${theme})`, async ({ browser }, testInfo) => {
      const alice = await participant(browser, 'Alice', { viewport: layout.viewport, colorScheme: theme, isMobile: layout.name === 'phone' });
      people = [alice];
      const page = alice.page;
      const found: Record<string, string[]> = {};

      await page.goto('/#/');
      await page.getByLabel(/Display name/).fill('Alice');
      found.home = await seriousViolations(page);

      await page.getByRole('button', { name: 'Create a room' }).click();
      await page.getByRole('heading', { name: 'Join the room' }).waitFor();
      found.prejoin = await seriousViolations(page);

      await page.getByRole('button', { name: 'Join', exact: true }).click();
      await inRoom(alice);
      await sendChat(alice, 'a message so the chat list has content');
      await expect.poll(() => texts(alice)).toEqual(['a message so the chat list has content']);
      await page.getByTestId('toggle-host').click();
      await expect(page.getByTestId('host-panel')).toBeVisible();
      await page.getByTestId('create-invite').click();
      await expect(page.getByTestId('invite-link')).toBeVisible();
      await expect(page.getByTestId('chat-panel')).toBeVisible();
      found.room = await seriousViolations(page);
      await page.screenshot({ path: testInfo.outputPath(`room-${layout.name}-${theme}.png`) });

      // The Invite panel with its link and QR code.
      await page.getByTestId('toggle-host').click();
      await page.getByTestId('toggle-share').click();
      await page.getByTestId('share-make').click();
      await expect(page.getByTestId('share-qr')).toBeVisible();
      found.share = await seriousViolations(page);
      await page.getByTestId('toggle-share').click();
      await page.getByTestId('toggle-host').click();

      page.once('dialog', (d) => void d.accept());
      await page.getByRole('button', { name: 'Close the room for everyone' }).click();
      await expect(page.getByTestId('ended')).toBeVisible();
      found.ended = await seriousViolations(page);

      expect(found).toEqual({ home: [], prejoin: [], room: [], share: [], ended: [] });
    });
  }
}

test('the axe check itself reports a contrast failure (so the checks above can fail)', async ({ browser }) => {
  const alice = await participant(browser, 'Alice');
  people = [alice];
  await alice.page.goto('/#/');
  await alice.page.getByRole('button', { name: 'Create a room' }).waitFor();
  expect(await seriousViolations(alice.page)).toEqual([]);
  await alice.page.evaluate(() => {
    const p = document.createElement('p');
    p.textContent = 'grey on grey';
    p.style.cssText = 'color:#777;background:#888';
    document.querySelector('main')!.append(p);
  });
  expect((await seriousViolations(alice.page)).join('\n')).toContain('color-contrast');
});

test('the theme follows the system and the switch overrides it, remembered across a reload', async ({ browser }) => {
  const alice = await participant(browser, 'Alice', { colorScheme: 'dark' });
  people = [alice];
  const page = alice.page;
  await page.goto('/#/');
  const background = () => page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  const dark = await background();
  await page.getByTestId('theme').selectOption('light');
  await expect.poll(background).not.toBe(dark);
  const light = await background();
  await page.reload();
  await expect(page.getByTestId('theme')).toHaveValue('light');
  expect(await background()).toBe(light);
  await page.getByTestId('theme').selectOption('system');
  await expect.poll(background).toBe(dark);
});

test('keyboard: shortcuts, the help dialog, and focus into and out of panels', async ({ browser }) => {
  const alice = await participant(browser, 'Alice');
  people = [alice];
  const page = alice.page;
  await createRoom(alice);
  // No emoji in the controls: every button's icon is an SVG shipped with the app.
  const controls = page.getByRole('navigation', { name: 'Call controls' });
  await expect(page.getByTestId('toggle-host')).toBeVisible();
  expect(await controls.evaluate((nav) => [...nav.querySelectorAll('button')].map((b) => b.querySelectorAll('svg').length))).toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
  expect(await controls.innerText()).not.toMatch(/\p{Extended_Pictographic}/u);

  const mic = page.getByTestId('toggle-mic');
  const before = await mic.getAttribute('aria-pressed');
  await page.locator('body').press('m');
  await expect(mic).not.toHaveAttribute('aria-pressed', before!);
  const cam = page.getByTestId('toggle-cam');
  await expect(cam).toHaveAttribute('aria-pressed', 'true');
  await page.locator('body').press('v');
  await expect(cam).toHaveAttribute('aria-pressed', 'false');
  await page.locator('body').press('d');
  await expect(page.getByTestId('toggle-screen')).toHaveAttribute('aria-pressed', 'true');
  await page.locator('body').press('d');
  await expect(page.getByTestId('toggle-screen')).toHaveAttribute('aria-pressed', 'false');

  // Letters typed into the message field are text, not shortcuts.
  await page.getByLabel('Message', { exact: true }).pressSequentially('mvc');
  await expect(page.getByLabel('Message', { exact: true })).toHaveValue('mvc');
  await expect(page.getByTestId('chat-panel')).toBeVisible();

  // Closing the chat with the keyboard: Escape in the panel, focus back on the Chat button.
  await page.getByLabel('Message', { exact: true }).press('Escape');
  await expect(page.getByTestId('chat-panel')).toHaveCount(0);
  await expect(page.getByTestId('toggle-chat')).toBeFocused();
  // Opening it with C puts the focus in the message field.
  await page.keyboard.press('c');
  await expect(page.getByTestId('chat-panel')).toBeVisible();
  await expect(page.getByLabel('Message', { exact: true })).toBeFocused();
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('toggle-chat')).toBeFocused();

  // The host panel takes the focus too, and gives it back.
  await page.getByTestId('toggle-host').click();
  await expect(page.getByLabel(/Put the encryption secret in the link/)).toBeFocused();
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('host-panel')).toHaveCount(0);
  await expect(page.getByTestId('toggle-host')).toBeFocused();

  // ? opens the list of shortcuts in a modal dialog; Escape closes it and the focus comes back.
  await page.keyboard.press('?');
  const dialog = page.getByRole('dialog', { name: 'Keyboard shortcuts' });
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText('Shift+L');
  await expect(dialog.getByRole('button', { name: 'Close' })).toBeFocused();
  expect(await seriousViolations(page)).toEqual([]);
  await page.keyboard.press('Escape');
  await expect(dialog).toBeHidden();
  await expect(page.getByTestId('toggle-host')).toBeFocused();

  // The devices panel.
  await page.getByTestId('toggle-devices').click();
  await expect(page.getByTestId('devices-panel')).toBeVisible();
  expect(await seriousViolations(page)).toEqual([]);
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('toggle-devices')).toBeFocused();

  // Shift+L leaves.
  await page.keyboard.press('Shift+L');
  await expect(page.getByRole('button', { name: 'Create a room' })).toBeVisible();
});

test('a screen reader hears new messages, not the history replayed on entering', async ({ browser }) => {
  const [alice, bob] = (people = await Promise.all(['Alice', 'Bob'].map((n) => participant(browser, n))));
  await createRoom(alice!);
  await joinWithLink(bob!, await inviteLink(alice!));
  await inRoom(bob!);
  const live = bob!.page.getByTestId('chat-live');
  await expect(bob!.page.getByRole('list', { name: 'Messages' })).not.toHaveAttribute('aria-live', /.*/);
  await expect(live).toHaveAttribute('aria-live', 'polite');
  await sendChat(alice!, 'first live message');
  await expect(live).toHaveText('Alice: first live message');
  await sendChat(alice!, 'second live message');
  await expect(live).toHaveText('Alice: second live message');

  // After a reload the history is shown again, but the live region stays quiet about it.
  await bob!.page.reload();
  await inRoom(bob!);
  await expect.poll(() => texts(bob!)).toEqual(['first live message', 'second live message']);
  await expect(bob!.page.getByTestId('chat-live')).toHaveText('');
  await sendChat(alice!, 'third, after the reload');
  await expect(bob!.page.getByTestId('chat-live')).toHaveText('Alice: third, after the reload');
});
