/**
 * Hash routes and invite links. Everything after `#` stays in the browser: the room's E2EE secret
 * may ride in an invite link's fragment because no server ever receives it.
 *
 *   #/                                  home
 *   #/join/<room_id>[/<token>[/<secret>]][?name=…&mic=0&cam=1&screen=0&relay=1]   pre-join screen
 *   #/room/<room_id>[?…]                the room (secret already known to this browser)
 *
 * The query after the fragment's path holds per-visit settings (`MediaPrefs`); `#/?relay=1` on the
 * home page carries `relay` into the room it creates.
 */

export interface MediaPrefs {
  name?: string;
  mic?: boolean;
  cam?: boolean;
  screen?: boolean;
  /**
   * `relay=1`: media and data channels go only through the homeserver's TURN relay
   * (`iceTransportPolicy: 'relay'`), so peers never learn this browser's IP addresses; costs the
   * relay's bandwidth and fails if the homeserver hands out no TURN server.
   */
  relay?: boolean;
  /** `rnnoise=1`: RNNoise on the microphone (chosen on the pre-join screen, pre-set from here). */
  rnnoise?: boolean;
}

export type Route =
  | { page: 'home'; prefs: MediaPrefs }
  | { page: 'join'; roomId: string; token: string | null; secret: string | null; prefs: MediaPrefs }
  | { page: 'room'; roomId: string; prefs: MediaPrefs };

function flag(v: string | null): boolean | undefined {
  if (v === null) return undefined;
  return !['0', 'false', 'off', 'no'].includes(v.toLowerCase());
}

export function parsePrefs(query: string): MediaPrefs {
  const q = new URLSearchParams(query);
  const prefs: MediaPrefs = {};
  const name = q.get('name');
  if (name) prefs.name = name.slice(0, 64);
  const mic = flag(q.get('mic'));
  const cam = flag(q.get('cam'));
  const screen = flag(q.get('screen'));
  const relay = flag(q.get('relay'));
  if (mic !== undefined) prefs.mic = mic;
  if (cam !== undefined) prefs.cam = cam;
  if (screen !== undefined) prefs.screen = screen;
  if (relay !== undefined) prefs.relay = relay;
  const rnnoise = flag(q.get('rnnoise'));
  if (rnnoise !== undefined) prefs.rnnoise = rnnoise;
  return prefs;
}

/**
 * The settings that follow a visitor from page to page (home → pre-join → room, and a reload of
 * the room), as a `?…` suffix for a fragment; mic, cam and name are chosen on the pre-join screen.
 */
export function carriedQuery(p: MediaPrefs): string {
  const q = new URLSearchParams();
  if (p.screen) q.set('screen', '1');
  if (p.relay) q.set('relay', '1');
  if (p.rnnoise) q.set('rnnoise', '1');
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The ICE transport policy the visitor asked for (see `MediaPrefs.relay`). */
export function iceTransportPolicy(p: MediaPrefs): RTCIceTransportPolicy {
  return p.relay ? 'relay' : 'all';
}

function safeDecode(s: string | undefined): string | null {
  if (!s) return null;
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

export function parseRoute(hash: string): Route {
  const h = hash.startsWith('#') ? hash.slice(1) : hash;
  const qi = h.indexOf('?');
  const path = qi >= 0 ? h.slice(0, qi) : h;
  const prefs = parsePrefs(qi >= 0 ? h.slice(qi + 1) : '');
  const parts = path.split('/').filter((p) => p !== '');
  const roomId = safeDecode(parts[1]);
  if (parts[0] === 'join' && roomId) {
    return { page: 'join', roomId, token: safeDecode(parts[2]), secret: safeDecode(parts[3]), prefs };
  }
  if (parts[0] === 'room' && roomId) return { page: 'room', roomId, prefs };
  return { page: 'home', prefs };
}

/** The fragment of an invite link (the caller prefixes the page's URL without its hash). */
export function inviteFragment(roomId: string, token: string | null, secret: string | null): string {
  let f = `#/join/${encodeURIComponent(roomId)}`;
  if (token) f += `/${encodeURIComponent(token)}`;
  if (token && secret) f += `/${encodeURIComponent(secret)}`;
  return f;
}

export function roomFragment(roomId: string): string {
  return `#/room/${encodeURIComponent(roomId)}`;
}

/** Accept a pasted full link, a bare fragment, or nothing useful (null). */
export function routeFromPastedLink(text: string): Route | null {
  const t = text.trim();
  const i = t.indexOf('#');
  if (i < 0) return null;
  const r = parseRoute(t.slice(i));
  return r.page === 'home' ? null : r;
}

/** A neutral label for the server ("Guest 3f2a") so operators never see the chosen name by default. */
export function neutralLabel(random: () => number = Math.random): string {
  return `Guest ${Math.floor(random() * 0x10000).toString(16).padStart(4, '0')}`;
}
