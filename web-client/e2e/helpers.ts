import { expect, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { join } from 'node:path';

export interface Participant {
  context: BrowserContext;
  page: Page;
  name: string;
}

/**
 * A separate browser profile per participant: its own localStorage, so its own guest session.
 * `options.baseURL` points it at another homeserver than the configured one.
 */
export async function participant(browser: Browser, name: string, options: BrowserContextOptions = {}): Promise<Participant> {
  const context = await browser.newContext(options);
  // Keep handles on the page's WebSockets so a test can cut them like a network drop would.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    const all: WebSocket[] = [];
    (window as unknown as { __sockets: WebSocket[] }).__sockets = all;
    window.WebSocket = class extends Native {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols);
        all.push(this);
      }
    } as typeof WebSocket;
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] pageerror`, e.message));
  if (process.env.CONFAB_E2E_DEBUG) page.on('console', (m) => console.log(`[${name}] ${m.type()}`, m.text()));
  return { context, page, name };
}

/** `timeout`: longer for tests that load the machine with many pages (each join derives a key with 600,000 PBKDF2 iterations). */
export async function inRoom(p: Participant, timeout = 30_000): Promise<void> {
  await p.page.waitForFunction(
    () => {
      const s = window.__confab?.state() as { connection?: string } | undefined;
      return s?.connection === 'online';
    },
    undefined,
    { timeout },
  );
}

/** `query` holds link settings after the fragment, e.g. `?relay=1`, carried into the room. */
export async function createRoom(p: Participant, query = ''): Promise<string> {
  await p.page.goto(`/#/${query}`);
  await p.page.getByLabel(/Display name/).fill(p.name);
  await p.page.getByRole('button', { name: 'Create a room' }).click();
  await p.page.getByRole('heading', { name: 'Join the room' }).waitFor();
  await p.page.getByRole('button', { name: 'Join', exact: true }).click();
  await inRoom(p);
  const url = p.page.url();
  return decodeURIComponent(url.slice(url.indexOf('#/room/') + 7).split('?')[0]!);
}

export async function inviteLink(host: Participant, withSecret = true): Promise<string> {
  const page = host.page;
  if ((await page.getByTestId('create-invite').count()) === 0) await page.getByTestId('toggle-host').click();
  const box = page.getByLabel(/Put the encryption secret in the link/);
  if ((await box.isChecked()) !== withSecret) await box.click();
  const field = page.getByTestId('invite-link');
  const before = (await field.count()) > 0 ? await field.inputValue() : '';
  await page.getByTestId('create-invite').click();
  await expect.poll(async () => ((await field.count()) > 0 ? field.inputValue() : '')).not.toBe(before);
  return field.inputValue();
}

export async function joinWithLink(p: Participant, link: string, opts: { passphrase?: string; query?: string } = {}): Promise<void> {
  await p.page.goto(link + `?name=${encodeURIComponent(p.name)}${opts.query ?? ''}`);
  if (opts.passphrase !== undefined) await p.page.getByLabel(/Passphrase/).fill(opts.passphrase);
  await p.page.getByRole('button', { name: 'Join', exact: true }).click();
}

/** Every chat plaintext the tests typed in this worker, for the database check. */
export const sentPlaintexts: string[] = [];

export async function sendChat(p: Participant, text: string): Promise<void> {
  sentPlaintexts.push(text);
  await p.page.getByLabel('Message', { exact: true }).fill(text);
  await p.page.getByRole('button', { name: 'Send' }).click();
}

export function texts(p: Participant): Promise<string[]> {
  return p.page.evaluate(() => {
    const s = window.__confab!.state() as { timeline: Array<{ kind: string; text?: string; status: string }> };
    return s.timeline.filter((i) => i.kind === 'text' && i.status === 'ok').map((i) => i.text!);
  });
}

export function myKey(p: Participant): Promise<string> {
  return p.page.evaluate(() => {
    const s = window.__confab!.state() as { me: { userId: string; deviceId: string } };
    return `${s.me.userId}|${s.me.deviceId}`;
  });
}

/** Inbound media from each peer per getStats: decoded video frames, received audio bytes, connection states. */
export interface PeerStats {
  framesDecoded: number;
  audioBytes: number;
  videoStreams: number;
  connection: string;
  signaling: string;
  ice: string;
  localCandidateType: string | null;
  remoteCandidateType: string | null;
}
export function stats(p: Participant): Promise<Record<string, PeerStats>> {
  return p.page.evaluate(() => window.__confab!.stats() as Promise<Record<string, PeerStats>>);
}

/**
 * Waits until `p` has decoded video frames and received audio from each of `others`. The polled value
 * lists what is still missing, so a failure says which peer and in what connection state.
 */
export async function receivesMediaFromAll(p: Participant, others: Participant[], timeout = 60_000): Promise<void> {
  const peers = await Promise.all(others.map(async (o) => ({ name: o.name, key: await myKey(o) })));
  await expect
    .poll(
      async () => {
        const s = await stats(p);
        return peers
          .filter(({ key }) => !((s[key]?.framesDecoded ?? 0) > 0 && (s[key]?.audioBytes ?? 0) > 0))
          .map(({ name, key }) => {
            const r = s[key];
            return r ? `${p.name}<-${name}: frames=${r.framesDecoded} audio=${r.audioBytes} pc=${r.connection} sig=${r.signaling} ice=${r.ice}` : `${p.name}<-${name}: no peer connection`;
          });
      },
      { timeout },
    )
    .toEqual([]);
}

/** What a failed test prints per participant: its peer connections and the client's recent log. */
export async function diagnostics(p: Participant): Promise<string> {
  try {
    return await p.page.evaluate(async (name) => {
      const c = window.__confab;
      if (!c) return `[${name}] not in a room (${location.hash})`;
      return `[${name}] ${JSON.stringify(await c.stats())}\n${c.log().map((l) => `[${name}] ${l}`).join('\n')}`;
    }, p.name);
  } catch (e) {
    return `[${p.name}] no diagnostics: ${String(e)}`;
  }
}

/**
 * The `content` of every row of the events table, read with psql over the unix socket of the
 * embedded cluster that the Playwright config started; null when the server is external.
 */
export function eventContents(): string[] | null {
  return query('select content::text from events order by room_id, seq');
}

/** Every display name the server holds (sessions and room_members); null when the server is external. */
export function registeredNames(): string[] | null {
  return query('select display_name from sessions union all select display_name from room_members');
}

function query(sql: string): string[] | null {
  const dataDir = process.env.CONFAB_E2E_DATA_DIR;
  if (!dataDir || process.env.CONFAB_URL) return null;
  const url = `postgresql://confab@localhost/confab?host=${join(dataDir, 'postgres', 'run')}`;
  const out = execFileSync('psql', [url, '-Atc', sql], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '');
}

/** A stored event of one room, from the embedded cluster; null when the server is external. */
export interface StoredEvent {
  seq: number;
  sender: string;
  device_id: string;
  content: { type: string; kind?: string; ciphertext?: string; membership?: string; user_id?: string };
}
export function storedEvents(roomId: string): StoredEvent[] | null {
  const rows = query(`select json_build_object('seq', seq, 'sender', sender, 'device_id', device_id, 'content', content)::text from events where room_id = '${roomId.replace(/'/g, "''")}' order by seq`);
  return rows?.map((r) => JSON.parse(r) as StoredEvent) ?? null;
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: Array<{ target: string[]; failureSummary?: string }>;
}

/** Serious and critical axe-core violations on the page as it is now, one line per failing element. */
export async function seriousViolations(page: Page): Promise<string[]> {
  // Evaluated over the DevTools protocol, so the page's CSP (script-src 'self') does not apply.
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, opts: object): Promise<{ violations: AxeViolation[] }> } }).axe;
    return (await axe.run(document, { resultTypes: ['violations'] })).violations;
  });
  return violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .flatMap((v) => v.nodes.map((n) => `${v.impact} ${v.id} (${v.help}) at ${n.target.join(' ')}: ${n.failureSummary ?? ''}`));
}


/** A free loopback port, for a server a test starts itself. */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? ok(addr.port) : fail(new Error('no port'))));
    });
  });
}
