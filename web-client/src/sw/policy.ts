/**
 * What the service worker does with a request, decided from the request alone so it is unit-tested
 * without a worker. Only the app shell is ever cached: the page itself (network first, so a new
 * deployment is picked up, the cached copy only when offline), the hashed build files under
 * `assets/` (cache first: their names change with their content) and the manifest and icons. API
 * answers (`/_confab/…`), health and metrics, other origins and anything but GET pass through
 * untouched, so no room data, token or ciphertext is ever written to the cache.
 */
export type CachePolicy = 'bypass' | 'shell-page' | 'immutable' | 'static';

export function cachePolicy(req: { method: string; url: string; mode?: string }, scope: string): CachePolicy {
  if (req.method !== 'GET') return 'bypass';
  const url = new URL(req.url);
  const base = new URL(scope);
  if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) return 'bypass';
  const path = url.pathname.slice(base.pathname.length);
  if (path.startsWith('_confab/') || path === '_confab' || path === 'health' || path === 'metrics') return 'bypass';
  if (url.search !== '') return 'bypass';
  if (req.mode === 'navigate' || path === '' || path === 'index.html') return 'shell-page';
  if (path.startsWith('assets/')) return 'immutable';
  if (path === 'manifest.webmanifest' || path.startsWith('icons/')) return 'static';
  return 'bypass';
}

/** Files cached when the worker installs, relative to its scope. */
export const SHELL_FILES = ['./', 'manifest.webmanifest', 'icons/icon.svg', 'icons/icon-192.png'];

/** The build files the page loads first, read from its HTML, so the shell is whole offline after the first visit. */
export function shellAssets(html: string): string[] {
  const out = new Set<string>();
  for (const m of html.matchAll(/<(?:script|link)\b[^>]*\b(?:src|href)="\.?\/?(assets\/[^"?#]+)"/g)) out.add(m[1]!);
  return [...out];
}
