/**
 * Devices: the microphone level meter on the pre-join screen moves with the (fake) microphone, and
 * switching the camera during the call swaps the track sent to peers without a renegotiation, the
 * peer still decoding frames. Unplugging cannot be done to Chromium's fake devices: the fallback
 * is unit-tested in roomSession.test.ts through the injected media capability.
 */
import { expect, test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, myKey, participant, receivesMediaFromAll, stats, type Participant } from './helpers';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('the pre-join screen shows a live microphone level', async ({ browser }) => {
  const alice = await participant(browser, 'Alice');
  people = [alice];
  await alice.page.goto('/#/');
  await alice.page.getByRole('button', { name: 'Create a room' }).click();
  const meter = alice.page.getByTestId('mic-level');
  await expect(meter).toBeVisible();
  await expect(alice.page.getByRole('meter', { name: 'Microphone level' })).toBeVisible();
  // Chromium's fake microphone beeps about twice a second; the meter holds a peak and lets it
  // decay. Checked every 50 ms, the level must rise above silence, fall well below that peak, and
  // rise again from its low: a new beep. Relative to the peak and the low seen, not to fixed
  // levels, because the browser's gain control changes the fake microphone's loudness over time.
  await alice.page.waitForFunction(
    () => {
      const w = window as unknown as { __meter?: { peak: number; low: number | null } };
      const m = (w.__meter ??= { peak: 0, low: null });
      const l = Number(document.querySelector('[data-testid="mic-level"]')?.getAttribute('data-level'));
      if (m.low === null) {
        m.peak = Math.max(m.peak, l);
        if (m.peak > 0.1 && l < 0.6 * m.peak) m.low = l;
        return false;
      }
      m.low = Math.min(m.low, l);
      return l > m.low + 0.1 && l > 0.5 * m.peak;
    },
    undefined,
    { polling: 50, timeout: 30_000 },
  );
});

test('switching the camera during the call replaces the sent track; the peer keeps decoding', async ({ browser }) => {
  const [alice, bob] = (people = await Promise.all(['Alice', 'Bob'].map((n) => participant(browser, n))));
  await createRoom(alice!);
  await joinWithLink(bob!, await inviteLink(alice!));
  await inRoom(bob!);
  await receivesMediaFromAll(bob!, [alice!]);
  const page = alice!.page;
  const selfTrack = () => page.getByTestId('tile-self').locator('video').evaluate((v: HTMLVideoElement) => (v.srcObject as MediaStream).getVideoTracks()[0]?.id ?? null);
  const before = await selfTrack();
  const negotiations = async () => (await page.evaluate(() => window.__confab!.log())).filter((l) => / offer (to|from) /.test(l)).length;
  const offersBefore = await negotiations();

  await page.getByTestId('toggle-devices').click();
  const camSelect = page.getByTestId('device-cam');
  await expect(page.getByTestId('device-mic')).toBeFocused(); // the panel's first menu takes the focus
  const cams = await camSelect.locator('option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value).filter((v) => v !== ''));
  expect(cams.length).toBeGreaterThan(0);
  await camSelect.selectOption(cams[cams.length - 1]!);
  await expect.poll(selfTrack).not.toBe(before);
  await expect(camSelect).toHaveValue(cams[cams.length - 1]!);

  // Bob keeps decoding frames from Alice after the switch, and nobody renegotiated for it.
  const aliceKey = await myKey(alice!);
  const framesNow = (await stats(bob!))[aliceKey]!.framesDecoded;
  await expect.poll(async () => (await stats(bob!))[aliceKey]!.framesDecoded, { timeout: 30_000 }).toBeGreaterThan(framesNow + 10);
  expect(await negotiations()).toBe(offersBefore);

  // The speaker menu is there where the browser can route audio (Chromium can).
  await expect(page.getByTestId('device-speaker')).toBeVisible();
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('toggle-devices')).toBeFocused();
});
