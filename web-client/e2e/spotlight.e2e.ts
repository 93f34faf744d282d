/**
 * Spotlight: a screen share takes the stage with the cameras in a strip; a pinned tile takes the
 * stage instead, and unpinning gives it back to the screen share; the spotlight view has no
 * serious or critical axe-core violation either.
 */
import { expect, test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, myKey, participant, receivesMediaFromAll, seriousViolations, stats, type Participant } from './helpers';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('a screen share takes the stage, a pin overrides it, and the screen’s sound comes along where offered', async ({ browser }, testInfo) => {
  const [alice, bob] = (people = await Promise.all(['Alice', 'Bob'].map((n) => participant(browser, n))));
  await createRoom(alice!);
  await joinWithLink(bob!, await inviteLink(alice!));
  await inRoom(bob!);
  await receivesMediaFromAll(bob!, [alice!]);
  const aliceKey = await myKey(alice!);
  await expect(bob!.page.getByTestId('spotlight')).toHaveCount(0); // an equal grid

  await alice!.page.getByTestId('toggle-screen').click();
  const spotlight = bob!.page.getByTestId('spotlight');
  await expect(spotlight).toHaveAttribute('data-stage', `tile-screen-${aliceKey}`, { timeout: 60_000 });
  const strip = bob!.page.getByTestId('strip');
  await expect(strip.getByTestId('tile-self')).toBeVisible();
  await expect(strip.getByTestId(`tile-${aliceKey}`)).toBeVisible();
  await bob!.page.screenshot({ path: testInfo.outputPath('spotlight.png') });
  expect(await seriousViolations(bob!.page)).toEqual([]);

  // Pin Alice's camera: it takes the stage; unpin: the screen share is back.
  await strip.getByTestId(`tile-${aliceKey}`).getByTestId('pin').click();
  await expect(spotlight).toHaveAttribute('data-stage', `tile-${aliceKey}`);
  await expect(strip.getByTestId(`tile-screen-${aliceKey}`)).toBeVisible();
  await bob!.page.getByTestId('spotlight').locator(`[data-testid="tile-${aliceKey}"]`).getByRole('button', { name: /^Unpin/ }).click();
  await expect(spotlight).toHaveAttribute('data-stage', `tile-screen-${aliceKey}`);

  // Sound: if the browser gave the share an audio track, it is sent, and Bob's screen tile plays it.
  const shareHasAudio = await alice!.page.getByTestId('tile-self-screen').locator('video').evaluate((v: HTMLVideoElement) => (v.srcObject as MediaStream).getAudioTracks().length > 0);
  console.log(`screen audio: ${shareHasAudio ? 'offered by this Chromium, checked at the receiver' : 'not offered by this Chromium'}`);
  if (shareHasAudio) {
    await expect(bob!.page.getByTestId(`tile-screen-${aliceKey}`).locator('audio')).toHaveCount(1);
    const audioBefore = (await stats(bob!))[aliceKey]!.audioBytes;
    await expect.poll(async () => (await stats(bob!))[aliceKey]!.audioBytes).toBeGreaterThan(audioBefore);
  }

  await alice!.page.getByTestId('toggle-screen').click();
  await expect(bob!.page.getByTestId('spotlight')).toHaveCount(0, { timeout: 60_000 });
});
