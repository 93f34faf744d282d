/**
 * Debian's Firefox ESR for the browser tests, driven by puppeteer-core over WebDriver BiDi (the
 * Playwright runner hosts the test; Playwright itself drives only its own Firefox builds, and
 * browser downloads are not used here). A page is reached through what a person would use: labels,
 * button names and the `data-testid`s the Chromium tests use, with `window.__confab` for state.
 */
import { existsSync } from 'node:fs';
import puppeteer, { type Browser, type ElementHandle, type Page } from 'puppeteer-core';
import { sentPlaintexts } from './helpers';

export const FIREFOX_PATH = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

/** How long one step (an element to appear, a state to be reached) may take. */
const STEP_MS = 30_000;

/**
 * Firefox's counterparts of Chromium's switches in playwright.config.ts: a fake camera and
 * microphone without a permission prompt; loopback ICE candidates, for a machine whose only
 * interface is loopback (Firefox leaves them out by default); host candidates as addresses, not
 * mDNS names that Chromium would have to resolve (Firefox already shows them once the camera is
 * granted; the pref keeps that from depending on it); media that plays without a user gesture;
 * and the page in English, which the tests read.
 */
const PREFS: Record<string, unknown> = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'intl.accept_languages': 'en-US',
  // No first-run pages, updates or telemetry reaching for the network.
  'browser.shell.checkDefaultBrowser': false,
  'app.update.enabled': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.enabled': false,
};

export interface FirefoxParticipant {
  browser: Browser;
  page: Page;
  name: string;
}

/**
 * Starts headless Firefox ESR with one page. A missing or broken Firefox fails the test with the
 * reason: the Firefox test is part of the suite, never skipped.
 */
export async function firefoxParticipant(name: string): Promise<FirefoxParticipant> {
  if (!existsSync(FIREFOX_PATH)) {
    throw new Error(`Firefox ESR not found at ${FIREFOX_PATH}: install Debian's firefox-esr (\`make browser-test\` does so as root) or set FIREFOX_PATH`);
  }
  let browser: Browser;
  try {
    browser = await puppeteer.launch({
      browser: 'firefox',
      protocol: 'webDriverBiDi',
      executablePath: FIREFOX_PATH,
      headless: true,
      timeout: 60_000,
      extraPrefsFirefox: PREFS,
    });
  } catch (e) {
    throw new Error(`Firefox ESR at ${FIREFOX_PATH} could not be started over WebDriver BiDi: ${String(e)}`);
  }
  const page = (await browser.pages())[0] ?? (await browser.newPage());
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => console.log(`[${name}] pageerror`, e instanceof Error ? e.message : String(e)));
  if (process.env.CONFAB_E2E_DEBUG) page.on('console', (m) => console.log(`[${name}] ${m.type()}`, m.text()));
  return { browser, page, name };
}

/** The input, select or textarea of the label whose text contains `text` (or equals it, `exact`). */
export async function byLabel(p: FirefoxParticipant, text: string, exact = false): Promise<ElementHandle<Element>> {
  const handle = await p.page.waitForFunction(
    (text: string, exact: boolean) => {
      for (const label of document.querySelectorAll('label')) {
        const t = label.textContent?.trim() ?? '';
        if (exact ? t !== text : !t.includes(text)) continue;
        const field = label.htmlFor ? document.getElementById(label.htmlFor) : label.querySelector('input, select, textarea');
        if (field) return field;
      }
      return null;
    },
    { timeout: STEP_MS, polling: 100 },
    text,
    exact,
  );
  return handle.asElement() as ElementHandle<Element>;
}

/** The enabled button whose visible text is exactly `name`. */
export async function button(p: FirefoxParticipant, name: string): Promise<ElementHandle<Element>> {
  const handle = await p.page.waitForFunction(
    (name: string) => [...document.querySelectorAll('button')].find((b) => b.textContent?.trim() === name && !b.disabled) ?? null,
    { timeout: STEP_MS, polling: 100 },
    name,
  );
  return handle.asElement() as ElementHandle<Element>;
}

export async function byTestId(p: FirefoxParticipant, id: string): Promise<ElementHandle<Element>> {
  const el = await p.page.waitForSelector(`[data-testid="${id}"]`, { timeout: STEP_MS });
  if (!el) throw new Error(`no [data-testid="${id}"]`);
  return el;
}

/** Types `text` over what a field holds, key by key, as the React inputs expect. */
export async function fill(field: ElementHandle<Element>, text: string): Promise<void> {
  await field.focus();
  await field.evaluate((el) => (el as HTMLInputElement).select());
  await field.type(text);
}

export async function inRoom(p: FirefoxParticipant): Promise<void> {
  await p.page.waitForFunction(() => (window.__confab?.state() as { connection?: string } | undefined)?.connection === 'online', { timeout: STEP_MS, polling: 100 });
}

/** The home page's "Create a room", then the pre-join screen's Join; returns when the room is online. */
export async function createRoom(p: FirefoxParticipant, baseURL: string): Promise<void> {
  await p.page.goto(`${baseURL}/#/`);
  await fill(await byLabel(p, 'Display name'), p.name);
  await (await button(p, 'Create a room')).click();
  await p.page.waitForFunction(() => [...document.querySelectorAll('h1, h2')].some((h) => h.textContent?.trim() === 'Join the room'), { timeout: STEP_MS, polling: 100 });
  await (await button(p, 'Join')).click();
  await inRoom(p);
}

/** A new invite link from the host panel, with the secret in it (the panel's default). */
export async function inviteLink(p: FirefoxParticipant): Promise<string> {
  if (!(await p.page.$('[data-testid="create-invite"]'))) await (await byTestId(p, 'toggle-host')).click();
  const secret = await byLabel(p, 'Put the encryption secret in the link');
  if (!(await secret.evaluate((el) => (el as HTMLInputElement).checked))) throw new Error('the secret is not in the link by default any more');
  await (await byTestId(p, 'create-invite')).click();
  const handle = await p.page.waitForFunction(() => (document.querySelector('[data-testid="invite-link"]') as HTMLInputElement | null)?.value || null, { timeout: STEP_MS, polling: 100 });
  return (await handle.jsonValue()) as string;
}

/** Like helpers.ts `sendChat`: the text joins those the database test looks for. */
export async function sendChat(p: FirefoxParticipant, text: string): Promise<void> {
  sentPlaintexts.push(text);
  await fill(await byLabel(p, 'Message', true), text);
  await (await button(p, 'Send')).click();
}

/** What a failed test prints for a Firefox page: its peer connections and the client's recent log. */
export async function firefoxDiagnostics(p: FirefoxParticipant): Promise<string> {
  try {
    const d = await p.page.evaluate(async () => (window.__confab ? `${JSON.stringify(await window.__confab.stats())}\n${window.__confab.log().join('\n')}` : `not in a room (${location.hash})`));
    return d.split('\n').map((l) => `[${p.name}] ${l}`).join('\n');
  } catch (e) {
    return `[${p.name}] no diagnostics: ${String(e)}`;
  }
}
