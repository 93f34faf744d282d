/// <reference lib="webworker" />
/**
 * The service worker: makes the app installable and lets its shell open offline. Which requests
 * it caches, and how, is `policy.ts`; this file only performs it. Built as its own entry (`sw.js`
 * at the root, so its scope is the whole app); the cache name carries the build id, so a new
 * deployment installs a new worker that drops the old build's files.
 */
import { cachePolicy, shellAssets, SHELL_FILES } from './policy';

declare const self: ServiceWorkerGlobalScope;
declare const __CONFAB_BUILD__: string;
const CACHE = `confab-shell-${__CONFAB_BUILD__}`;

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(SHELL_FILES);
      // The page's own scripts and styles too: the visit that installs the worker loaded them
      // before the worker could see the requests.
      const page = await cache.match('./');
      if (page) await cache.addAll(shellAssets(await page.text()));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('confab-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function networkFirst(req: Request, fallback: string): Promise<Response> {
  const cache = await caches.open(CACHE);
  try {
    const res = await fetch(req);
    if (res.ok) await cache.put(fallback, res.clone());
    return res;
  } catch (err) {
    const cached = (await cache.match(fallback)) ?? (await cache.match(req));
    if (cached) return cached;
    throw err;
  }
}

async function cacheFirst(req: Request): Promise<Response> {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(req);
  if (cached) return cached;
  const res = await fetch(req);
  if (res.ok) await cache.put(req, res.clone());
  return res;
}

self.addEventListener('fetch', (event) => {
  const req = event.request;
  const policy = cachePolicy({ method: req.method, url: req.url, mode: req.mode }, self.registration.scope);
  if (policy === 'bypass') return; // the browser fetches it as if there were no worker
  if (policy === 'shell-page') event.respondWith(networkFirst(req, new URL('./', self.registration.scope).href));
  else if (policy === 'immutable') event.respondWith(cacheFirst(req));
  else event.respondWith(networkFirst(req, req.url));
});
