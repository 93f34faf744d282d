/**
 * Scaling out in the browser (README, "Scaling out"): one homeserver run as three `confab serve`
 * workers behind Debian's HAProxy, on one database (a database of its own in the embedded cluster
 * of the server the Playwright config started). Each participant's browser reaches a different
 * worker (a cookie the load balancer routes by while that worker is up; otherwise round robin, no
 * room affinity). They share a call and encrypted chat; the worker of one of them is killed with
 * SIGKILL mid-call, and that browser reconnects through the load balancer to another worker and
 * resumes with no chat lost or doubled; capacity, lock and kick hold across the workers.
 */
import { expect, test } from '@playwright/test';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createRoom,
  freePort,
  diagnostics,
  inRoom,
  inviteLink,
  joinWithLink,
  participant,
  receivesMediaFromAll,
  sendChat,
  texts,
  type Participant,
} from './helpers';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WORKERS = ['w1', 'w2', 'w3'] as const;

const workers = new Map<string, ChildProcess>();
let haproxy: ChildProcess | undefined;
let dataDir: string | undefined;
let configDir: string | undefined;
let base = '';
let database = '';
let socketDir = '';

function psql(db: string, sql: string): string[] {
  const out = execFileSync('psql', [`postgresql://confab@localhost/${db}?host=${socketDir}`, '-Atc', sql], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '');
}

/** Polls `url` until it answers 200 or `child` exits; fails the suite with the reason. */
async function healthy(url: string, child: ChildProcess): Promise<void> {
  await expect
    .poll(
      async () => {
        if (child.exitCode !== null) return `exited with ${child.exitCode}`;
        try {
          return (await fetch(url)).status;
        } catch {
          return 'not listening yet';
        }
      },
      { timeout: 60_000 },
    )
    .toBe(200);
}

test.beforeAll(async () => {
  // Fails rather than skips: a suite run against an outside server must not look complete.
  if (process.env.CONFAB_URL) throw new Error('needs the server the Playwright config starts (its Postgres holds the workers\u2019 database): run it without CONFAB_URL');
  const haproxyBin = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p));
  if (!haproxyBin) throw new Error('HAProxy is not installed: `make haproxy` (Debian\u2019s haproxy package)');
  socketDir = join(process.env.CONFAB_E2E_DATA_DIR!, 'postgres', 'run');
  database = `confab_workers_${randomBytes(6).toString('hex')}`;
  psql('postgres', `CREATE DATABASE ${database}`);
  const proxyPort = await freePort();
  base = `http://127.0.0.1:${proxyPort}`;
  dataDir = mkdtempSync(join(tmpdir(), 'confab-e2e-workers-'));
  const servers: string[] = [];
  // One after another: the first one writes the signing key that all of them share.
  for (const id of WORKERS) {
    const port = await freePort();
    const child = spawn(join(repo, 'target/debug/confab'), ['serve'], {
      cwd: repo,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env,
        CONFAB__SERVER__LISTEN: `127.0.0.1:${port}`,
        CONFAB__SERVER__NAME: `127.0.0.1:${proxyPort}`,
        CONFAB__SERVER__PUBLIC_URL: base,
        CONFAB__SERVER__DATA_DIR: dataDir,
        CONFAB__SERVER__WEB_CLIENT_DIR: join(repo, 'web-client', 'dist'),
        CONFAB__ADMIN__LISTEN: '',
        CONFAB__DATABASE__URL: `postgresql://confab@localhost/${database}?host=${socketDir}`,
        CONFAB__DATABASE__POOL_SIZE: '8',
        CONFAB__CLUSTER__WORKER_ID: id,
        CONFAB__CLUSTER__LEASE: '3s',
        CONFAB__ROOMS__MAX_PARTICIPANTS: '3',
        RUST_LOG: process.env.RUST_LOG ?? 'warn',
      },
    });
    workers.set(id, child);
    await healthy(`http://127.0.0.1:${port}/health`, child);
    servers.push(`    server ${id} 127.0.0.1:${port} check inter 500ms fall 2 rise 2`);
  }
  configDir = mkdtempSync(join(tmpdir(), 'confab-e2e-haproxy-'));
  const config = join(configDir, 'haproxy.cfg');
  writeFileSync(
    config,
    [
      'global',
      '    maxconn 4096',
      'defaults',
      '    mode http',
      '    timeout connect 2s',
      '    timeout client 60s',
      '    timeout server 60s',
      '    timeout tunnel 1h',
      '    option forwardfor',
      '    retries 3',
      '    option redispatch 1',
      'frontend public',
      `    bind 127.0.0.1:${proxyPort}`,
      '    default_backend workers',
      'backend workers',
      '    balance roundrobin',
      '    option httpchk GET /health',
      '    http-check expect status 200',
      // A browser with the cookie w=<id> reaches that worker while it is up.
      ...WORKERS.map((id) => `    use-server ${id} if { req.cook(w) -m str ${id} }`),
      ...servers,
      '',
    ].join('\n'),
  );
  haproxy = spawn(haproxyBin, ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  await healthy(`${base}/health`, haproxy);
});

test.afterAll(async () => {
  haproxy?.kill('SIGKILL');
  await Promise.all(
    [...workers.values()]
      .filter((w) => w.exitCode === null && w.signalCode === null)
      .map((w) => {
        const exited = new Promise((ok) => w.once('exit', ok));
        w.kill('SIGTERM');
        return exited;
      }),
  );
  if (database) psql('postgres', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  for (const dir of [dataDir, configDir]) if (dir) rmSync(dir, { recursive: true, force: true });
});

let people: Participant[] = [];
test.afterEach(async ({}, testInfo) => {
  if (testInfo.status !== testInfo.expectedStatus) {
    for (const p of people) console.log(await diagnostics(p));
  }
  await Promise.all(people.map((p) => p.context.close()));
  people = [];
});

/** A participant whose browser reaches the homeserver through the load balancer, on `worker`. */
async function on(browser: Parameters<typeof participant>[0], name: string, worker: string): Promise<Participant> {
  const p = await participant(browser, name, { baseURL: base });
  await p.context.addCookies([{ name: 'w', value: worker, url: base }]);
  return p;
}

/** The workers each user's sockets are on, as the database records them (live workers only). */
function placement(): Map<string, string> {
  const rows = psql(
    database,
    `SELECT s.display_name || '=' || c.worker_id FROM worker_connections c
       JOIN sessions s ON s.user_id = c.user_id
       JOIN workers w ON w.worker_id = c.worker_id AND w.lease_until_ts > (extract(epoch from clock_timestamp()) * 1000)::bigint`,
  );
  return new Map(rows.map((r) => r.split('=') as [string, string]));
}

test('three participants on three workers share a call and chat through a SIGKILL of one', async ({ browser }) => {
  const [host, ann, ben] = (people = await Promise.all([on(browser, 'Hana', 'w1'), on(browser, 'Ann', 'w2'), on(browser, 'Ben', 'w3')]));
  await createRoom(host!);
  const link = await inviteLink(host!);
  await joinWithLink(ann!, link);
  await joinWithLink(ben!, link);
  await Promise.all([inRoom(ann!), inRoom(ben!)]);
  // The server knows each by a neutral label; the sessions' ids tell whose socket is where.
  const labels = psql(database, 'SELECT display_name FROM sessions ORDER BY created_ts');
  expect(labels).toHaveLength(3);
  const where = placement();
  expect([...where.values()].sort()).toEqual(['w1', 'w2', 'w3']);
  const annLabel = [...where].find(([, w]) => w === 'w2')![0];

  // Signaling crosses workers: every pair is in a call.
  await receivesMediaFromAll(host!, [ann!, ben!]);
  await receivesMediaFromAll(ann!, [host!, ben!]);
  await receivesMediaFromAll(ben!, [host!, ann!]);
  await sendChat(host!, 'from w1');
  await sendChat(ann!, 'from w2');
  await sendChat(ben!, 'from w3');
  for (const p of [host!, ann!, ben!]) await expect.poll(() => texts(p)).toEqual(['from w1', 'from w2', 'from w3']);
  await ben!.page.getByLabel('Message', { exact: true }).pressSequentially('typing…');
  await expect(host!.page.getByTestId('typing')).toContainText('Ben is typing');
  await ben!.page.getByLabel('Message', { exact: true }).fill('');

  // Ann's worker dies mid-call; the others chat on meanwhile.
  workers.get('w2')!.kill('SIGKILL');
  await sendChat(host!, 'while w2 was down');
  // Ann's browser reconnects through the load balancer to a live worker and resumes.
  await expect.poll(() => placement().get(annLabel), { timeout: 30_000 }).toMatch(/^w[13]$/);
  await inRoom(ann!);
  await sendChat(ann!, 'ann is back');
  const all = ['from w1', 'from w2', 'from w3', 'while w2 was down', 'ann is back'];
  for (const p of [host!, ann!, ben!]) await expect.poll(() => texts(p), { timeout: 30_000 }).toEqual(all);
  // The call went on (media is peer to peer; signaling found Ann on her new worker).
  await receivesMediaFromAll(ann!, [host!, ben!]);

  // Capacity counts every worker: three are connected, a fourth is refused.
  const dora = await on(browser, 'Dora', 'w3');
  people.push(dora);
  await joinWithLink(dora, link);
  await expect(dora.page.getByTestId('join-error')).toContainText(/full/i);

  // The lock, set through w1, holds on w3; the kick, committed through w1, reaches Ben on w3.
  await host!.page.getByTestId('toggle-lock').click();
  await expect(ben!.page.getByTestId('locked')).toBeVisible();
  await host!.page.getByRole('button', { name: 'Remove Ben' }).click();
  await expect(ben!.page.getByTestId('ended')).toContainText('removed you');
  // A place is free now, but the room is locked to newcomers.
  await dora.page.reload();
  await joinWithLink(dora, link);
  await expect(dora.page.getByTestId('join-error')).toContainText(/locked/i);
});
