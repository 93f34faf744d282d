/**
 * A relay-only call: a local coturn (`use-auth-secret`) on loopback, a homeserver of its own whose
 * `[ice]` settings point at it, and two pages opened with `relay=1` (iceTransportPolicy 'relay'),
 * so the only candidates they may use are TURN allocations made with the short-lived credentials
 * the homeserver derived from the shared secret, which it gives only to members of the room.
 * Passing means the credentials reached the pages in the room, and media flows through coturn:
 * each side's selected pair has a relay local candidate and video decodes.
 *
 * coturn denies every peer address that `docker/turnserver.conf` (the production rules) denies,
 * loopback among them, but for the one address both relays are on, 127.0.0.1, which it must
 * reach here; homeserver/tests/turn.rs checks that these rules refuse any other.
 *
 * Needs `turnserver` (Debian's coturn; `make test` installs it when run as root). It runs as an
 * unprivileged process (nobody, when the tests run as root), with its service left disabled.
 */
import { expect, test } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRoom, diagnostics, inRoom, inviteLink, joinWithLink, participant, receivesMediaFromAll, stats, type Participant } from './helpers';

const webClient = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const repo = resolve(webClient, '..');
const NOBODY = 65534;
/** The one loopback address coturn may relay to: where it relays from, for both pages. */
const RELAY_IP = '127.0.0.1';

/** The production peer rules, as coturn options: every non-public range denied. */
function shippedPeerRules(): string[] {
  const rules = readFileSync(join(repo, 'docker/turnserver.conf'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('denied-peer-ip=') || l === 'no-multicast-peers')
    .map((l) => `--${l}`);
  if (rules.length < 20) throw new Error(`docker/turnserver.conf has too few peer rules: ${rules.join(' ')}`);
  return rules;
}

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? ok(addr.port) : fail(new Error('no port'))));
    });
  });
}

/** Keeps the last lines a process printed, for the failure message. */
function tail(child: ChildProcess): () => string {
  const lines: string[] = [];
  const keep = (b: Buffer) => {
    lines.push(...b.toString().split('\n').filter((l) => l.trim() !== ''));
    lines.splice(0, Math.max(0, lines.length - 40));
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => lines.join('\n');
}

/** One STUN Binding request over UDP; resolves true if coturn answers within `ms`. */
function stunAnswers(port: number, ms: number): Promise<boolean> {
  return new Promise((ok) => {
    const sock = createSocket('udp4');
    const request = Buffer.alloc(20);
    request.writeUInt16BE(0x0001, 0); // Binding request, no attributes
    request.writeUInt32BE(0x2112a442, 4); // magic cookie
    randomBytes(12).copy(request, 8);
    const done = (answered: boolean) => {
      clearTimeout(timer);
      sock.close();
      ok(answered);
    };
    const timer = setTimeout(() => done(false), ms);
    sock.on('message', (msg) => done(msg.length >= 20 && msg.readUInt16BE(0) === 0x0101 && msg.subarray(8, 20).equals(request.subarray(8, 20))));
    sock.on('error', () => done(false));
    sock.send(request, port, '127.0.0.1');
  });
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((ok) => child.once('exit', ok));
  child.kill('SIGTERM');
  await exited;
}

let turn: ChildProcess | undefined;
let homeserver: ChildProcess | undefined;
let base = '';
let turnLog: () => string = () => '';
let serverLog: () => string = () => '';
const dirs: string[] = [];

test.beforeAll(async () => {
  const root = process.getuid?.() === 0;
  const turnPort = await freePort();
  const secret = randomBytes(24).toString('hex');
  const turnDir = mkdtempSync(join(tmpdir(), 'confab-coturn-'));
  dirs.push(turnDir);
  if (root) chownSync(turnDir, NOBODY, NOBODY);
  turn = spawn(
    'turnserver',
    [
      // No configuration file (a system one would add to these options).
      '-n',
      '--listening-ip', '127.0.0.1', '--listening-port', String(turnPort), '--relay-ip', RELAY_IP,
      '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm', 'confab.test',
      // Both peers' relay addresses are on loopback, which coturn refuses as peers unless told:
      // loopback peers are allowed, then exactly the relays' address is whitelisted, and the
      // shipped rules deny the rest of 127.0.0.0/8 with every other non-public range.
      '--allow-loopback-peers', `--allowed-peer-ip=${RELAY_IP}`, ...shippedPeerRules(),
      '--no-tls', '--no-dtls', '--no-cli', '--log-file', 'stdout',
      '--pidfile', join(turnDir, 'turnserver.pid'), '--db', join(turnDir, 'turndb'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], ...(root ? { uid: NOBODY, gid: NOBODY } : {}) },
  );
  turnLog = tail(turn);
  const turnFailed = new Promise<never>((_, fail) => {
    turn!.once('error', (e) => fail(new Error(`cannot run turnserver (apt-get install coturn): ${e.message}`)));
    turn!.once('exit', (code) => fail(new Error(`turnserver exited (${code}):\n${turnLog()}`)));
  });
  turnFailed.catch(() => {}); // observed below, and in afterAll's stop()
  await Promise.race([
    turnFailed,
    expect.poll(() => stunAnswers(turnPort, 500), { timeout: 20_000, message: 'coturn answers STUN' }).toBe(true),
  ]);

  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'confab-e2e-turn-'));
  dirs.push(dataDir);
  chmodSync(dataDir, 0o711); // as root, the embedded Postgres runs as another user
  homeserver = spawn(join(repo, 'target/debug/confab'), ['serve'], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      CONFAB__SERVER__LISTEN: `127.0.0.1:${port}`,
      CONFAB__SERVER__NAME: `127.0.0.1:${port}`,
      CONFAB__SERVER__PUBLIC_URL: base,
      CONFAB__SERVER__DATA_DIR: dataDir,
      CONFAB__SERVER__WEB_CLIENT_DIR: join(webClient, 'dist'),
      CONFAB__ICE__TURN_URLS: `turn:127.0.0.1:${turnPort}?transport=udp`,
      CONFAB__ICE__TURN_SECRET: secret,
      CONFAB__ADMIN__LISTEN: '', // the Playwright config's server may want the same default port
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
    },
  });
  serverLog = tail(homeserver);
  await expect
    .poll(
      async () => {
        if (homeserver!.exitCode !== null) throw new Error(`confab serve exited:\n${serverLog()}`);
        return fetch(`${base}/health`).then((r) => r.status, () => 0);
      },
      { timeout: 60_000, message: 'the homeserver answers /health' },
    )
    .toBe(200);
});

test.afterAll(async () => {
  await stop(homeserver);
  await stop(turn);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) {
    for (const p of people) console.log(await diagnostics(p));
    console.log(`[coturn]\n${turnLog()}\n[homeserver]\n${serverLog()}`);
  }
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

test('a relay-only call connects through coturn with credentials the pages get in the room', async ({ browser }) => {
  type Servers = { ice_servers: Array<{ urls: string[]; username?: string; credential?: string }> };
  // Anyone may read the configuration, and it names no TURN server and gives no credential.
  const config = (await (await fetch(`${base}/_confab/client/v1/config`)).json()) as Servers;
  expect(config.ice_servers.some((s) => s.urls.some((u) => u.startsWith('turn:')) || s.credential)).toBe(false);

  const [alice, bob] = (people = await Promise.all(['Alice', 'Bob'].map((n) => participant(browser, n, { baseURL: base }))));
  // Each page asks for the room's servers with its session, once in the room.
  const grants = [alice!, bob!].map((p) =>
    p.page.waitForResponse((r) => r.url().includes('/ice_servers') && r.request().method() === 'GET'),
  );
  await createRoom(alice!, '?relay=1');
  expect(alice!.page.url()).toContain('relay=1'); // the setting followed her into the room
  const link = await inviteLink(alice!);
  await joinWithLink(bob!, link, { query: '&relay=1' });
  await inRoom(bob!);
  for (const grant of await Promise.all(grants)) {
    expect(grant.status()).toBe(200);
    const body = (await grant.json()) as Servers & { expires_in_ms: number };
    expect(body.expires_in_ms).toBe(3_600_000);
    const turn = body.ice_servers.find((s) => s.urls.some((u) => u.startsWith('turn:')));
    expect(turn?.username).toMatch(/^\d+:@guest-/);
    expect(turn?.credential).toBeTruthy();
  }

  await receivesMediaFromAll(alice!, [bob!]);
  await receivesMediaFromAll(bob!, [alice!]);

  // Each side's selected candidate pair starts at its own TURN allocation.
  for (const p of [alice!, bob!]) {
    await expect
      .poll(async () => Object.values(await stats(p)).map((s) => s.localCandidateType), { message: `${p.name}'s selected local candidates` })
      .toEqual(['relay']);
  }
  // And video keeps decoding over that path.
  const before = Object.values(await stats(bob!))[0]!.framesDecoded;
  await expect.poll(async () => Object.values(await stats(bob!))[0]!.framesDecoded).toBeGreaterThan(before);
});
