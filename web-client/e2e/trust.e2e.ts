/**
 * Trust you can see: the key check tells a wrong passphrase at once (and peers show that person as
 * unable to decrypt rather than "connecting"), the fingerprint is the same for everyone sharing
 * the key, a blank passphrase says the room is not private, and tiles show connection quality.
 */
import { expect, test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, myKey, participant, receivesMediaFromAll, type Participant } from './helpers';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('a different passphrase is told at once, and peers show that person as unable to decrypt', async ({ browser }) => {
  const [alice, bob, eve] = (people = await Promise.all(['Alice', 'Bob', 'Eve'].map((n) => participant(browser, n))));
  await createRoom(alice!);
  await joinWithLink(bob!, await inviteLink(alice!));
  await inRoom(bob!);
  const fingerprint = (p: Participant) => p.page.getByTestId('fingerprint').innerText();
  await expect(alice!.page.getByTestId('e2ee')).toHaveAttribute('data-private', 'true');
  expect(await fingerprint(bob!)).toBe(await fingerprint(alice!));
  expect(await fingerprint(alice!)).toMatch(/^\d{3} \d{3} \d{3} \d{3}$/);

  await joinWithLink(eve!, await inviteLink(alice!, false), { passphrase: 'a guess that is wrong' });
  await inRoom(eve!);
  await expect(eve!.page.getByTestId('banner')).toContainText('This passphrase does not match the room’s — ask the host');
  expect(await fingerprint(eve!)).not.toBe(await fingerprint(alice!));
  const eveKey = await myKey(eve!);
  for (const p of [alice!, bob!]) {
    await expect(p.page.getByTestId(`tile-${eveKey}`).getByTestId('key-mismatch')).toContainText('Cannot decrypt: different passphrase');
    // The right-key participants are not told that their own passphrase is wrong.
    await expect(p.page.getByText(/does not match the room/)).toHaveCount(0);
  }
  // Alice and Bob still see each other as a normal call.
  await receivesMediaFromAll(alice!, [bob!]);
  await expect(alice!.page.getByTestId(`tile-${await myKey(bob!)}`).getByTestId('key-mismatch')).toHaveCount(0);
});

test('a blank passphrase says plainly that the room is not private', async ({ browser }) => {
  const [alice, bob] = (people = await Promise.all(['Alice', 'Bob'].map((n) => participant(browser, n))));
  await createRoom(alice!);
  const link = await inviteLink(alice!, false);
  await bob!.page.goto(link + `?name=Bob`);
  await bob!.page.getByLabel(/Passphrase/).fill('');
  await expect(bob!.page.getByTestId('not-private')).toContainText('This room is not private');
  await bob!.page.getByRole('button', { name: 'Join', exact: true }).click();
  await inRoom(bob!);
  await expect(bob!.page.getByTestId('e2ee')).toHaveAttribute('data-private', 'false');
  await expect(bob!.page.getByTestId('e2ee')).toHaveText(/Not private: no passphrase/);
  await expect(bob!.page.getByTestId('fingerprint')).toHaveCount(0);
});

test('each remote tile shows its connection quality from getStats in plain words', async ({ browser }) => {
  const [alice, bob] = (people = await Promise.all(['Alice', 'Bob'].map((n) => participant(browser, n))));
  await createRoom(alice!);
  await joinWithLink(bob!, await inviteLink(alice!));
  await inRoom(bob!);
  await receivesMediaFromAll(alice!, [bob!]);
  const tile = alice!.page.getByTestId(`tile-${await myKey(bob!)}`);
  // Loopback: round trip near zero and no loss.
  await expect(tile.getByTestId('quality')).toContainText('Good connection');
  await expect(tile).toHaveAttribute('data-quality', 'good');
  await expect(tile.getByTestId('quality')).toContainText(/round trip \d+ ms, loss [\d.]+ %, \d+ kbit\/s in/);
});
