import { describe, expect, it } from 'vitest';
import { cachePolicy, shellAssets } from './policy';

const scope = 'https://confab.example/';
const get = (path: string, mode = 'no-cors') => cachePolicy({ method: 'GET', url: scope + path, mode }, scope);

describe('service worker cache policy', () => {
  it('never caches API answers, health, metrics, other origins or anything but GET', () => {
    expect(get('_confab/v1/rooms')).toBe('bypass');
    expect(get('_confab/v1/config')).toBe('bypass');
    expect(get('_confab/v1/rooms/!r:x/events?since=0')).toBe('bypass');
    expect(get('health')).toBe('bypass');
    expect(get('metrics')).toBe('bypass');
    expect(cachePolicy({ method: 'POST', url: scope + 'assets/a.js' }, scope)).toBe('bypass');
    expect(cachePolicy({ method: 'GET', url: 'https://other.example/assets/a.js' }, scope)).toBe('bypass');
    expect(get('assets/a.js?x=1')).toBe('bypass');
    expect(get('something-else.json')).toBe('bypass');
  });
  it('caches the shell: the page network first, hashed build files cache first, manifest and icons', () => {
    expect(get('', 'navigate')).toBe('shell-page');
    expect(get('index.html')).toBe('shell-page');
    expect(get('assets/index-abc123.js')).toBe('immutable');
    expect(get('assets/RoomPage-abc.css')).toBe('immutable');
    expect(get('manifest.webmanifest')).toBe('static');
    expect(get('icons/icon-192.png')).toBe('static');
  });
  it('works under a sub-path scope', () => {
    const sub = 'https://example.org/confab/';
    expect(cachePolicy({ method: 'GET', url: sub + '_confab/v1/config' }, sub)).toBe('bypass');
    expect(cachePolicy({ method: 'GET', url: sub + 'assets/x.js' }, sub)).toBe('immutable');
    expect(cachePolicy({ method: 'GET', url: 'https://example.org/assets/x.js' }, sub)).toBe('bypass');
  });
});

describe('shell assets', () => {
  it('are the scripts and styles index.html loads, not other links', () => {
    const html = `<link rel="manifest" href="./manifest.webmanifest" /><script type="module" crossorigin src="./assets/index-Bg.js"></script>
      <link rel="stylesheet" crossorigin href="./assets/index-CS.css"><link rel="modulepreload" href="./assets/vendor-x.js"><a href="https://x/assets/y.js">`;
    expect(shellAssets(html)).toEqual(['assets/index-Bg.js', 'assets/index-CS.css', 'assets/vendor-x.js']);
  });
});
