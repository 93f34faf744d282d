/**
 * Sharing, co-hosts and the lobby in real browsers against a real homeserver: a guest shares a
 * link and its QR code once the host allows it (and a newcomer joins with it); a co-host removes a
 * guest; a knock at a locked room with a lobby is admitted (and another refused) from the host panel.
 */
import { expect, test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, participant, receivesMediaFromAll, type Participant } from './helpers';
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

test('a co-host removes a guest, whose old key opens nothing after', async ({ browser }) => {
  const [host, cohost, guest] = (people = await Promise.all(['Hana', 'Cole', 'Gwen'].map((n) => participant(browser, n))));
  await createRoom(host!);
  const link = await inviteLink(host!);
  await joinWithLink(cohost!, link);
  await joinWithLink(guest!, link);
  await Promise.all([inRoom(cohost!), inRoom(guest!)]);
  // The new key after the removal goes over the data channels: the calls are up first.
  await receivesMediaFromAll(cohost!, [host!, guest!]);
  // Not a co-host yet: no host panel.
  await expect(cohost!.page.getByTestId('toggle-host')).toHaveCount(0);
  await host!.page.getByRole('button', { name: 'Make Cole a co-host' }).click();
  await expect(cohost!.page.locator('li', { hasText: 'Cole is now a co-host' })).toBeVisible();
  await cohost!.page.getByTestId('toggle-host').click();
  // A co-host may remove a guest, but names no co-hosts and cannot close the room.
  await expect(cohost!.page.getByRole('button', { name: /Make .* a co-host/ })).toHaveCount(0);
  await expect(cohost!.page.getByRole('button', { name: 'Close the room for everyone' })).toHaveCount(0);
  await expect(cohost!.page.getByRole('button', { name: 'Remove Hana' })).toHaveCount(0);
  await cohost!.page.getByRole('button', { name: 'Remove Gwen' }).click();
  await expect(guest!.page.getByTestId('ended')).toContainText('removed you');
  await expect(cohost!.page.getByTestId('removal-notice')).toBeVisible();
  // The co-host's new room key reached the host (a co-host may replace it, like the host).
  const fingerprint = (p: Participant) => p.page.getByTestId('fingerprint').innerText();
  await expect.poll(() => fingerprint(host!)).toBe(await fingerprint(cohost!));
});

test('a knock at the locked room is admitted from the host panel', async ({ browser }) => {
  const [host, knocker, other] = (people = await Promise.all(['Hana', 'Kim', 'Ray'].map((n) => participant(browser, n))));
  await createRoom(host!);
  const link = await inviteLink(host!);
  await host!.page.getByTestId('toggle-lobby').click();
  await expect(host!.page.getByTestId('toggle-lobby')).toBeChecked();
  await expect(host!.page.locator('li', { hasText: 'Newcomers with a link now knock while the room is locked' })).toBeVisible();
  await host!.page.getByTestId('toggle-lock').click();
  await expect(host!.page.getByTestId('locked')).toBeVisible();

  await joinWithLink(knocker!, link);
  await expect(knocker!.page.getByTestId('knocking')).toBeVisible();
  await expect(host!.page.getByTestId('knock-count')).toHaveText('1');
  // The knocker is not in the encrypted channel yet: hosts see the name the server knows (a neutral
  // label unless the knocker chose to share theirs).
  await expect(host!.page.getByTestId('knocks')).toContainText('Guest');
  await host!.page.getByTestId('knock-admit').click();
  await inRoom(knocker!);
  await expect(host!.page.getByTestId('knocks')).toHaveCount(0);

  // Another one is turned away, and told so.
  await joinWithLink(other!, link);
  await expect(other!.page.getByTestId('knocking')).toBeVisible();
  await host!.page.getByTestId('knock-refuse').click();
  await expect(other!.page.getByTestId('join-error')).toHaveText('A host did not let you in.');
});
