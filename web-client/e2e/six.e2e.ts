/**
 * A six-person call on this machine: every page decodes video from all five others, per getStats.
 * Cameras are captured at 160×120 and 10 frames a second (the fake camera honours constraints), so
 * the thirty encoders and thirty decoders of a six-way mesh fit on two cores.
 */
import { test } from '@playwright/test';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, participant, receivesMediaFromAll, type Participant } from './helpers';

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) for (const p of people) console.log(await diagnostics(p));
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('six people: every page decodes frames from all five others', async ({ browser }) => {
  test.setTimeout(600_000);
  const names = ['Alice', 'Bob', 'Carol', 'Dave', 'Erin', 'Frank'];
  people = await Promise.all(names.map((n) => participant(browser, n, { viewport: { width: 640, height: 480 } })));
  for (const p of people) {
    await p.context.addInitScript(() => {
      const md = navigator.mediaDevices;
      const original = md.getUserMedia.bind(md);
      md.getUserMedia = (c?: MediaStreamConstraints) => {
        if (!c?.video) return original(c);
        const video = typeof c.video === 'object' ? c.video : {};
        return original({ ...c, video: { ...video, width: { ideal: 160 }, height: { ideal: 120 }, frameRate: { ideal: 10 } } });
      };
    });
  }
  const [host, ...guests] = people;
  await createRoom(host!);
  const link = await inviteLink(host!);
  for (const g of guests) {
    await joinWithLink(g, link);
    await inRoom(g, 120_000); // six pages on two cores, each deriving its key: joins get slow
  }
  for (const p of people) await receivesMediaFromAll(p, people.filter((o) => o !== p), 120_000);
});
