/**
 * Sharing, co-hosts and the lobby in real browsers against a real homeserver: a guest shares a
 * link and its QR code once the host allows it (and a newcomer joins with it).
 */
import { expect, test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, participant, type Participant } from './helpers';
import { qrModules, qrPath } from '../src/state/qr';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('a guest shares an invite link and its QR code once the host allows it', async ({ browser }) => {
  const clipboard = { permissions: ['clipboard-read', 'clipboard-write'] };
  const [host, guest, friend] = (people = await Promise.all([
    participant(browser, 'Hana'),
    participant(browser, 'Gus', clipboard),
    participant(browser, 'Fay'),
  ]));
  await createRoom(host!);
  await joinWithLink(guest!, await inviteLink(host!));
  await inRoom(guest!);
  // Off by default: the guest has no Invite button.
  await expect(guest!.page.getByTestId('toggle-host')).toHaveCount(0);
  await expect(guest!.page.getByTestId('toggle-share')).toHaveCount(0);

  // The box shows the room's setting: it is ticked once the server's settings event is back.
  await host!.page.getByTestId('toggle-guests-share').click();
  await expect(host!.page.getByTestId('toggle-guests-share')).toBeChecked();
  await expect(guest!.page.locator('li', { hasText: 'The host lets everyone share invite links' })).toBeVisible();
  await guest!.page.getByTestId('toggle-share').click();
  await guest!.page.getByTestId('share-make').click();
  const link = await guest!.page.getByTestId('share-link').inputValue();
  expect(link).toMatch(/#\/join\/![^/]+\/[^/]+\/.+/);
  await guest!.page.getByTestId('share-copy').click();
  await expect(guest!.page.getByTestId('share-copy')).toHaveText('Copied');
  expect(await guest!.page.evaluate(() => navigator.clipboard.readText())).toBe(link);
  // The QR code drawn is the one of that very link.
  const qr = guest!.page.getByTestId('share-qr');
  await expect(qr).toBeVisible();
  const expected = qrPath(await qrModules(link)).path;
  expect(await qr.locator('path').getAttribute('d')).toBe(expected);

  // The host sees who made it, and a newcomer comes in with it.
  await host!.page.getByTestId('toggle-host').click();
  await host!.page.getByTestId('toggle-host').click();
  await expect(host!.page.getByText(/made by/)).toBeVisible();
  await joinWithLink(friend!, link);
  await inRoom(friend!);

  // Turned off again, the guest's Invite button goes.
  await host!.page.getByTestId('toggle-guests-share').click();
  await expect(host!.page.getByTestId('toggle-guests-share')).not.toBeChecked();
  await expect(guest!.page.getByTestId('toggle-share')).toHaveCount(0);
});
