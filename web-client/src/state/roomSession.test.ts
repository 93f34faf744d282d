/**
 * The room session (the view model) against an in-memory homeserver and fake peer connections:
 * chat between two sessions, resume after a dropped socket with nothing lost or doubled, kicked
 * and replaced sessions, the key check between different passphrases, replayed history kept out
 * of the live region, and attention while hidden.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { RoomSession, type AttentionBackend } from './roomSession';
import { canShare } from './roomState';
import { LocalMemory, memoryStore } from './storage';
import { deriveRoomKeyMaterial, openJson } from '../crypto/e2ee';
import type { RestClient } from '../protocol/rest';
import type { IceGrant } from '../protocol/types';
import { FakeRoomServer, ROOM } from '../testing/fakeServer';
import { asStream, cameraStream, FakeRtcWorld, FakeStream, FakeTrack, until } from '../testing/fakeRtc';
import { deviceKey } from '../mesh/negotiation';
import { memoryFileStore } from '../files/memoryStore';

const ITERATIONS = 1000; // the real 600,000 are tested in crypto; here only agreement matters
const sessions: RoomSession[] = [];
afterEach(() => {
  for (const s of sessions.splice(0)) s.dispose();
});

interface Made {
  session: RoomSession;
  memory: LocalMemory;
  titles: string[];
  notes: string[];
  key: string;
}

/** The homeserver's answer for a room's ICE servers, when a test does not care: no TURN. */
const noTurn = async (): Promise<IceGrant> => ({ ice_servers: [], expires_in_ms: null });

async function join(
  server: FakeRoomServer,
  world: FakeRtcWorld,
  user: string,
  passphrase: string,
  opts: { device?: string; iceServers?: (roomId: string) => Promise<IceGrant>; relay?: boolean; displayMedia?: (c: DisplayMediaStreamOptions) => Promise<MediaStream> } = {},
): Promise<Made> {
  const device = opts.device ?? `D-${user}`;
  const token = server.guest(user, device);
  const memory = new LocalMemory(memoryStore());
  memory.rememberRoom(ROOM, { passphrase, joinedSeq: 0 });
  const titles: string[] = [];
  const notes: string[] = [];
  const attention: AttentionBackend = { setTitle: (t) => titles.push(t), notify: (_t, body) => notes.push(body) };
  let n = 0;
  const session = new RoomSession({
    roomId: ROOM,
    session: { user_id: user, device_id: device, access_token: token, display_name: user } as never,
    myName: user.slice(1, user.indexOf(':')),
    roomKey: await deriveRoomKeyMaterial(passphrase, ROOM, ITERATIONS),
    weakKey: passphrase === '',
    attention,
    baseTitle: 'Confab',
    rest: { leave: async () => undefined, kick: async (_room: string, u: string) => server.kick(u), iceServers: opts.iceServers ?? noTurn } as unknown as RestClient,
    memory,
    secret: passphrase,
    wsUrl: 'ws://fake',
    wsFactory: server.factory,
    iceServers: [],
    iceTransportPolicy: opts.relay ? 'relay' : 'all',
    createPeerConnection: world.create,
    fileStore: memoryFileStore(),
    media: {
      getUserMedia: async () => asStream(cameraStream()),
      getDisplayMedia: opts.displayMedia ?? (async () => asStream(new FakeStream())),
      createStream: (tracks) => asStream(new FakeStream(tracks as never)),
    },
    randomId: () => `${user}-${device}-${++n}`.replace(/[^a-z0-9]/gi, '').padEnd(32, '0'),
    now: () => Date.now(),
    backoff: { baseMs: 20, maxMs: 100, factor: 2 },
  });
  sessions.push(session);
  await session.start({ mic: true, cam: true, noiseSuppression: true });
  await until(() => session.store.get().connection === 'online', `${user} online`);
  return { session, memory, titles, notes, key: deviceKey(user, device) };
}

const texts = (m: Made) => m.session.store.get().timeline.filter((i) => i.kind === 'text' && i.status === 'ok').map((i) => i.text);

describe('room session', () => {
  it('two sessions chat end to end and connect their call', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'pass');
    const bob = await join(server, world, '@bob:test', 'pass');
    await alice.session.sendText('hello bob');
    await until(() => texts(bob).includes('hello bob'), 'bob reads alice');
    // The server only ever saw ciphertext.
    expect(JSON.stringify(server.events)).not.toContain('hello bob');
    await until(() => bob.session.store.get().peers[alice.key]?.state === 'connected', 'call connected');
    await until(() => (bob.session.store.get().peers[alice.key]?.streams.length ?? 0) > 0, 'alice’s camera at bob');
    await until(() => bob.session.store.get().names['@alice:test'] === 'alice', 'alice’s name from her encrypted profile');
    expect(bob.session.store.get().keyMismatch).toEqual({});
  });

  it('resumes after a dropped socket: missed messages once, the offline outbox delivered once', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'pass');
    const bob = await join(server, world, '@bob:test', 'pass');
    await alice.session.sendText('one');
    await until(() => texts(bob).includes('one'), 'one');
    server.socketOf('@bob:test', 'D-@bob:test')!.fail();
    await until(() => bob.session.store.get().connection === 'reconnecting', 'bob notices');
    await alice.session.sendText('two, while bob is away');
    await bob.session.sendText('bob wrote offline');
    expect(bob.session.pendingCount()).toBe(1);
    await until(() => bob.session.store.get().connection === 'online', 'bob back');
    await until(() => texts(bob).length === 3 && texts(alice).length === 3, 'everything on both sides');
    expect(texts(bob)).toEqual(['one', 'two, while bob is away', 'bob wrote offline']);
    expect(texts(alice)).toEqual(texts(bob));
    expect(bob.session.pendingCount()).toBe(0);
    // The resubscription asked only for what was missed.
    const subs = server.frames.filter((f) => f.type === 'subscribe' && f.from === 'bob:test|D-@bob:test'.replace(/^/, '@'));
    expect(subs.map((f) => f.since)).toEqual([0, 3]);
    expect(bob.session.store.get().banner?.text).toMatch(/Reconnected/);
    // The history replayed after the drop is not announced: the last live item is bob's own
    // message (sent after the resubscription), never alice's replayed one.
    expect(bob.session.store.get().lastLive?.text).toBe('bob wrote offline');
  });

  it('a message whose ack was lost goes again with the same transaction id, and is in the room once', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'pass');
    const bob = await join(server, world, '@bob:test', 'pass');
    server.loseNextChatAck = true;
    await alice.session.sendText('only once');
    await until(() => alice.session.store.get().connection === 'online' && alice.session.pendingCount() === 0, 'alice resent it');
    await until(() => texts(bob).includes('only once'), 'bob has it');
    const sent = server.frames.filter((f) => f.type === 'chat' && f.from === '@alice:test|D-@alice:test');
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(new Set(sent.map((f) => f.txn_id)).size).toBe(1);
    expect(typeof sent[0]!.txn_id).toBe('string');
    expect(server.events.filter((e) => e.content.type === 'chat' && e.content.kind === 'text')).toHaveLength(1);
    expect(texts(bob)).toEqual(['only once']);
    expect(texts(alice)).toEqual(['only once']);
  });

  it('kicked: the session ends, forgets the passphrase and closes its connections', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    await join(server, world, '@alice:test', 'pass');
    const bob = await join(server, world, '@bob:test', 'pass');
    await until(() => world.all.length >= 2, 'connections made');
    server.kick('@bob:test');
    await until(() => bob.session.store.get().ended !== null, 'bob’s session ended');
    expect(bob.session.store.get().ended?.reason).toBe('kicked');
    expect(bob.memory.room(ROOM)).toBeNull();
    expect(bob.session.mesh.size).toBe(0);
  });

  it('replaced by another tab of the same device, and taking the room back', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const first = await join(server, world, '@alice:test', 'pass', { device: 'D1' });
    await first.session.sendText('before the second tab');
    const second = await join(server, world, '@alice:test', 'pass', { device: 'D1' });
    await until(() => first.session.store.get().ended?.reason === 'replaced', 'first tab replaced');
    expect(second.session.store.get().ended).toBeNull();
    second.session.dispose();
    await first.session.takeOver();
    await until(() => first.session.store.get().ended === null && first.session.store.get().connection === 'online', 'first tab back');
    expect(texts(first)).toEqual(['before the second tab']);
  });

  it('a different passphrase is told at once on both sides by the key check', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const host = await join(server, world, '@alice:test', 'the right one');
    const bob = await join(server, world, '@bob:test', 'the right one');
    const eve = await join(server, world, '@eve:test', 'a wrong guess');
    await until(() => eve.session.store.get().keyWrong, 'eve told her passphrase is wrong');
    expect(eve.session.store.get().banner?.text).toMatch(/does not match the room’s — ask the host/);
    await until(() => !!host.session.store.get().keyMismatch[eve.key] && !!bob.session.store.get().keyMismatch[eve.key], 'others mark eve');
    expect(host.session.store.get().keyWrong).toBe(false);
    expect(bob.session.store.get().keyWrong).toBe(false);
    expect(bob.session.store.get().keyMismatch[host.key]).toBeUndefined();
    expect(eve.session.store.get().fingerprint).not.toBe(host.session.store.get().fingerprint);
    expect(bob.session.store.get().fingerprint).toBe(host.session.store.get().fingerprint);
    // Eve leaving clears the mark.
    server.socketOf('@eve:test', 'D-@eve:test')!.fail();
    eve.session.dispose();
    await until(() => !host.session.store.get().keyMismatch[eve.key], 'mark cleared when eve left');
  });

  it('while hidden, messages and joins badge the title and notify without the text; shown again clears it', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'pass');
    const bob = await join(server, world, '@bob:test', 'pass');
    await until(() => alice.session.store.get().names['@bob:test'] === 'bob', 'alice knows bob’s name');
    alice.session.setHidden(true);
    await bob.session.sendText('secret words');
    await until(() => alice.titles.at(-1) === '(1) Confab', 'badge 1');
    await join(server, world, '@carol:test', 'pass');
    await until(() => alice.titles.at(-1) === '(2) Confab', 'badge 2');
    await until(() => alice.notes.length === 2, 'two notifications');
    expect(alice.notes).toEqual(['New message from bob', 'carol joined the room']);
    expect(alice.notes.join()).not.toContain('secret words');
    alice.session.setHidden(false);
    expect(alice.titles.at(-1)).toBe('Confab');
  });
});

describe('room settings', () => {
  it('a guest may share once the host allows it, as the settings event says, live and on resuming', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    await join(server, world, '@host:test', 'pass');
    const guest = await join(server, world, '@guest:test', 'pass');
    expect(canShare(guest.session.store.get())).toBe(false);
    server.setGuestsMayShare(true);
    await until(() => canShare(guest.session.store.get()), 'guest may share');
    const system = () => guest.session.store.get().timeline.filter((i) => i.kind === 'system').map((i) => i.text);
    expect(system()).toContain('sharingOn');
    server.setGuestsMayShare(false);
    await until(() => !canShare(guest.session.store.get()), 'guest may no longer share');
    // A resume replays nothing it had, and the summary says the setting as it is.
    server.socketOf('@guest:test', 'D-@guest:test')!.fail();
    await until(() => guest.session.store.get().connection === 'reconnecting', 'guest notices');
    server.setGuestsMayShare(true);
    await until(() => guest.session.store.get().connection === 'online' && canShare(guest.session.store.get()), 'guest back and allowed');
    expect(system().filter((t) => t === 'sharingOn')).toHaveLength(2);
    expect(system().filter((t) => t === 'sharingOff')).toHaveLength(1);
  });
});

describe('TURN credentials', () => {
  it('connections get the room’s credentials, fetched with the session once in the room and renewed before they run out; a relayed one restarts ICE with them', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const asked: string[] = [];
    // Credentials that last 250 ms, so renewal comes after the shortest delay (a second).
    const iceServers = (user: string) => async (roomId: string): Promise<IceGrant> => {
      asked.push(`${user} ${roomId}`);
      const n = asked.length;
      return { ice_servers: [{ urls: ['turn:turn.test:3478'], username: `${n}:${user}`, credential: `secret-${n}` }], expires_in_ms: 250 };
    };
    const alice = await join(server, world, '@alice:test', 'pass', { iceServers: iceServers('@alice:test'), relay: true });
    const bob = await join(server, world, '@bob:test', 'pass', { iceServers: iceServers('@bob:test'), relay: true });
    expect(asked.slice(0, 2)).toEqual([`@alice:test ${ROOM}`, `@bob:test ${ROOM}`]);
    // TURN came with the room: no "this homeserver offers no TURN relay" banner for relay=1.
    expect(alice.session.store.get().banner).toBeNull();
    await until(() => alice.session.store.get().peers[bob.key]?.state === 'connected' && bob.session.store.get().peers[alice.key]?.state === 'connected', 'connected');
    const pcOf = (user: string) => world.all.find((pc) => JSON.stringify(pc.config).includes(user))!;
    const [alicePc, bobPc] = [pcOf('@alice:test'), pcOf('@bob:test')];
    expect(alicePc.config.iceServers).toEqual([{ urls: ['turn:turn.test:3478'], username: '1:@alice:test', credential: 'secret-1' }]);
    expect(bobPc.config.iceServers).toEqual([{ urls: ['turn:turn.test:3478'], username: '2:@bob:test', credential: 'secret-2' }]);

    // Bob's call goes through his relay; Alice's selected pair is a direct one.
    bobPc.localCandidateType = 'relay';
    const restarts = { alice: alicePc.restarts, bob: bobPc.restarts };
    await until(() => alicePc.reconfigured.length > 0 && bobPc.reconfigured.length > 0, 'both renewed', 5000);
    const renewedFor = (pc: typeof alicePc) => pc.reconfigured[0]!.iceServers![0]!.username!;
    expect(renewedFor(alicePc)).toMatch(/^\d+:@alice:test$/);
    expect(renewedFor(bobPc)).toMatch(/^\d+:@bob:test$/);
    expect(renewedFor(bobPc)).not.toBe('2:@bob:test');
    // Nothing but the servers changed, and only the relayed connection restarted ICE.
    expect(bobPc.reconfigured[0]!.bundlePolicy).toBe('max-bundle');
    await until(() => bobPc.restarts > restarts.bob, 'bob restarts ICE with the new credentials');
    expect(alicePc.restarts).toBe(restarts.alice);
    await until(() => bob.session.store.get().peers[alice.key]?.state === 'connected', 'still connected');
  });
});

describe('devices during the call', () => {
  it('an unplugged microphone falls back to the default, swapped into the call without renegotiating', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'pass');
    // Bob's browser, with a USB headset and a device-change event the test fires.
    const devices = [
      { kind: 'audioinput', deviceId: 'mic-usb', label: 'USB headset' },
      { kind: 'audioinput', deviceId: 'mic-built-in', label: 'Built-in' },
      { kind: 'videoinput', deviceId: 'cam-1', label: 'Camera' },
    ];
    let changed: (() => void) | null = null;
    const asked: MediaStreamConstraints[] = [];
    const token = server.guest('@bob:test', 'DB');
    const memory = new LocalMemory(memoryStore());
    const bob = new RoomSession({
      roomId: ROOM,
      session: { user_id: '@bob:test', device_id: 'DB', access_token: token, display_name: 'bob' } as never,
      myName: 'bob',
      roomKey: await deriveRoomKeyMaterial('pass', ROOM, ITERATIONS),
      weakKey: false,
      rest: { leave: async () => undefined, iceServers: noTurn } as unknown as RestClient,
      memory,
      wsUrl: 'ws://fake',
      wsFactory: server.factory,
      iceServers: [],
      createPeerConnection: world.create,
      fileStore: memoryFileStore(),
      media: {
        getUserMedia: async (c) => {
          asked.push(c);
          return asStream(c.video ? cameraStream() : new FakeStream([new FakeTrack('audio')]));
        },
        getDisplayMedia: async () => asStream(new FakeStream()),
        createStream: (tracks) => asStream(new FakeStream(tracks as never)),
        enumerateDevices: async () => devices,
        onDeviceChange: (fn) => {
          changed = fn;
          return () => (changed = null);
        },
      },
      randomId: () => Math.random().toString(16).slice(2).padEnd(32, '0'),
      now: () => Date.now(),
      backoff: { baseMs: 20, maxMs: 100, factor: 2 },
    });
    sessions.push(bob);
    await bob.start({ mic: true, cam: true, noiseSuppression: true, audioDeviceId: 'mic-usb' });
    await until(() => bob.store.get().peers[alice.key]?.state === 'connected' && bob.store.get().devices.length === 3, 'bob in the call, devices listed');
    expect(bob.store.get().deviceChoice.audioinput).toBe('mic-usb');
    // Bob's connection to Alice: the one sending Bob's microphone.
    const bobsPc = world.all.find((p) => p.senders.some((x) => (bob.store.get().local.camera?.getAudioTracks() ?? []).includes(x.track as never)))!;
    expect(bobsPc).toBeTruthy();
    const oldMic = bob.store.get().local.camera!.getAudioTracks()[0]!;
    const offers = bobsPc.offersMade;

    devices.splice(0, 1); // the headset is unplugged
    changed!();
    await until(() => bob.store.get().deviceChoice.audioinput === '' && bob.store.get().local.camera!.getAudioTracks()[0] !== oldMic, 'fell back to the default microphone');
    expect(bob.store.get().banner?.text).toBe('Your microphone was disconnected: now using the default one.');
    const newMic = bob.store.get().local.camera!.getAudioTracks()[0]!;
    expect((oldMic as unknown as FakeTrack).readyState).toBe('ended');
    expect(bobsPc.senders.some((x) => x.track === (newMic as unknown as FakeTrack))).toBe(true);
    expect(bobsPc.offersMade).toBe(offers); // replaceTrack: no renegotiation
    // The new capture asked for the default device: no deviceId constraint.
    expect(JSON.stringify(asked.at(-1))).not.toContain('mic-usb');
    expect(newMic.enabled).toBe(true); // the microphone stays on as it was

    // Switching by hand to another camera swaps the video sender too.
    const oldCam = bob.store.get().local.camera!.getVideoTracks()[0]!;
    await bob.switchDevice('videoinput', 'cam-1');
    const newCam = bob.store.get().local.camera!.getVideoTracks()[0]!;
    expect(newCam).not.toBe(oldCam);
    expect(JSON.stringify(asked.at(-1))).toContain('cam-1');
    expect(bobsPc.senders.some((x) => x.track === (newCam as unknown as FakeTrack))).toBe(true);
  });
});

describe('a new key after a removal', () => {
  it('the host hands a fresh key to the others over their data channels; the removed member decrypts nothing stored after', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'the passphrase');
    const bob = await join(server, world, '@bob:test', 'the passphrase');
    const mallory = await join(server, world, '@mallory:test', 'the passphrase');
    const connected = (m: Made, others: Made[]) => others.every((o) => m.session.store.get().peers[o.key]?.state === 'connected');
    await until(() => connected(alice, [bob, mallory]) && connected(bob, [alice, mallory]), 'full mesh', 5000);
    await alice.session.sendText('before the removal');
    await until(() => texts(mallory).includes('before the removal'), 'mallory reads before');
    const oldFingerprint = alice.session.store.get().fingerprint;

    // The server's answer comes back whole: the panel tells the host the link was revoked.
    expect(await alice.session.kick('@mallory:test')).toMatchObject({ user_id: '@mallory:test', invite_revoked: true, revoked_invites: ['the-link'] });
    const kickSeq = server.events.length;
    expect(alice.session.store.get().fingerprint).not.toBe(oldFingerprint);
    await until(() => bob.session.store.get().fingerprint === alice.session.store.get().fingerprint, 'bob has the new key');
    expect(bob.session.store.get().banner?.text).toMatch(/new key/);
    // New invites carry the new key; the old passphrase is kept only for the history.
    expect(alice.session.currentSecret()).toMatch(/^k1\./);
    expect(alice.memory.room(ROOM)?.olderSecrets).toEqual(['the passphrase']);
    expect(bob.memory.room(ROOM)?.passphrase).toBe(alice.session.currentSecret());

    await alice.session.sendText('after the removal, from alice');
    await bob.session.sendText('after the removal, from bob');
    await until(() => texts(bob).includes('after the removal, from alice') && texts(alice).includes('after the removal, from bob'), 'both read each other');
    expect(texts(bob)).toContain('before the removal'); // the history stays readable

    // Everything the server stored after the removal, tried with the key the removed member has.
    const oldKey = (await deriveRoomKeyMaterial('the passphrase', ROOM, ITERATIONS)).key;
    const after = server.events.filter((e) => e.seq > kickSeq && e.content.type === 'chat');
    expect(after.length).toBeGreaterThanOrEqual(2);
    for (const ev of after) {
      const c = ev.content as { kind: string; ciphertext: string };
      await expect(openJson(oldKey, c.ciphertext, { roomId: ROOM, userId: ev.sender, deviceId: ev.device_id, kind: c.kind })).rejects.toThrow(/cannot decrypt/);
    }
    // And the old key does open what came before (so the check above can fail).
    const before = server.events.find((e) => e.seq <= kickSeq && e.content.type === 'chat' && (e.content as { kind: string }).kind === 'text')!;
    const bc = before.content as { kind: string; ciphertext: string };
    await expect(openJson(oldKey, bc.ciphertext, { roomId: ROOM, userId: before.sender, deviceId: before.device_id, kind: bc.kind })).resolves.toMatchObject({ text: 'before the removal' });
  });

  it('only the host can replace the key', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const alice = await join(server, world, '@alice:test', 'pass');
    const bob = await join(server, world, '@bob:test', 'pass');
    await until(() => alice.session.store.get().peers[bob.key]?.state === 'connected' && bob.session.store.get().peers[alice.key]?.state === 'connected', 'connected');
    const before = alice.session.store.get().fingerprint;
    // Bob (not the host) tries to hand out a key of his own.
    bob.session.mesh.sendControl({ t: 'rekey', epoch: 5, secret: 'k1.' + 'A'.repeat(43) }, () => true);
    // Then a media-state change on the same ordered channel: once Alice sees it, she has handled the rekey.
    bob.session.toggleMic();
    await until(() => alice.session.store.get().peers[bob.key]?.media.mic === false, 'alice saw bob mute');
    await alice.session.sendText('still the old key');
    await until(() => texts(bob).includes('still the old key'), 'bob reads with the old key');
    expect(alice.session.store.get().fingerprint).toBe(before);
  });

  it('a screen share the browser gives without sound goes out as the picture alone, and says so', async () => {
    const server = new FakeRoomServer();
    const world = new FakeRtcWorld();
    const asked: DisplayMediaStreamOptions[] = [];
    let sound = false;
    const displayMedia = async (c: DisplayMediaStreamOptions) => {
      asked.push(c);
      return asStream(new FakeStream(sound ? [new FakeTrack('video'), new FakeTrack('audio')] : [new FakeTrack('video')]));
    };
    const alice = await join(server, world, '@alice:test', 'pass', { displayMedia });
    const bob = await join(server, world, '@bob:test', 'pass');
    await until(() => bob.session.store.get().peers[alice.key]?.state === 'connected', 'connected');

    await alice.session.toggleScreen(); // Firefox, Safari: no sound with the picture
    expect(asked).toEqual([{ video: true, audio: true }]);
    expect(alice.session.store.get().local.screen).toBe(true);
    expect(alice.session.store.get().banner?.text).toBe('Sharing the picture without sound: this browser (or the window you chose) gives none.');
    await until(() => bob.session.store.get().peers[alice.key]?.streams.some((x) => x.label === 'screen') ?? false, 'bob sees alice’s screen');

    await alice.session.toggleScreen();
    expect(alice.session.store.get().local.screen).toBe(false);
    const bannerBefore = alice.session.store.get().banner;
    sound = true; // Chromium sharing a tab
    await alice.session.toggleScreen();
    expect(alice.session.store.get().local.screen).toBe(true);
    expect(alice.session.store.get().banner).toBe(bannerBefore);
  });
});
