/**
 * The room's view state and the pure functions that fold protocol traffic into it: the chat
 * timeline (ordered by seq, deduplicated by seq and by the sender's message id so a resent message
 * never shows twice), presence per user and device, typing, unread count, members and lock state.
 */
import type { KnockContent, Member, Role, RoomSummary } from '../protocol/types';
import type { FileOffer } from '../files/chunks';
import type { TransferView } from '../files/transfers';
import type { Quality } from '../mesh/quality';
import { DEFAULT_CHOICE, type DeviceChoice, type DeviceEntry } from './devices';

export type ItemStatus = 'ok' | 'protected' | 'refused';

export interface ChatItem {
  seq: number;
  ts: number;
  sender: string;
  deviceId: string;
  /** 'text' | 'file' | 'system' (member and lock events) */
  kind: 'text' | 'file' | 'system';
  status: ItemStatus;
  text?: string;
  file?: FileOffer;
  /** system items about a member: their user id, named when shown ("<name> <text>") */
  subject?: string;
  /** sender-chosen id inside the ciphertext; dedupes a message resent after a dropped ack */
  mid?: string;
}

export interface DevicePresence {
  deviceId: string;
  serverName: string;
}

export type PeerConnectionState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

export interface RemoteStreamView {
  id: string;
  label: 'camera' | 'screen';
  stream: MediaStream;
}

export interface PeerView {
  key: string;
  userId: string;
  deviceId: string;
  state: PeerConnectionState;
  ice: string;
  streams: RemoteStreamView[];
  filesOpen: boolean;
  media: { mic: boolean; cam: boolean; screen: boolean };
}

export interface Banner {
  tone: 'info' | 'warn' | 'error';
  text: string;
  /** Names a banner that a later state change takes down again (e.g. 'reconnecting', 'key'). */
  id?: string;
}

export type EndReason = 'kicked' | 'closed' | 'expired' | 'replaced' | 'fatal' | 'left';

export interface RoomViewState {
  roomId: string;
  me: { userId: string; deviceId: string };
  myName: string;
  host: string;
  /** We are a host (the host or a co-host). */
  isHost: boolean;
  role: Role;
  locked: boolean;
  /** A locked room lets newcomers with a valid link knock (a room setting). */
  lobby: boolean;
  /** userId → a knock waiting for the hosts' answer (hosts only). */
  knocks: Record<string, { name: string; expiresTs: number }>;
  /** The host lets every member make invite links (a room setting, kept by the room's origin). */
  guestsMayShare: boolean;
  maxParticipants: number;
  members: Member[];
  /** userId → devices with a live subscription */
  presence: Record<string, DevicePresence[]>;
  /** userId → name sent encrypted by that user (kind `profile`) */
  names: Record<string, string>;
  /** device key → true while typing */
  typing: Record<string, boolean>;
  timeline: ChatItem[];
  unread: number;
  chatOpen: boolean;
  connection: 'connecting' | 'online' | 'reconnecting' | 'stopped';
  banner: Banner | null;
  ended: { reason: EndReason; text: string } | null;
  weakKey: boolean;
  /** The room key's fingerprint, for people to compare by voice (crypto/e2ee.ts). */
  fingerprint: string;
  /** Device keys of peers whose key check differs from ours: they cannot decrypt, nor we them. */
  keyMismatch: Record<string, true>;
  /** Our passphrase is not the room's (the host's, or every peer's, key check differs). */
  keyWrong: boolean;
  /**
   * Items with a seq above this arrived live; those at or below it are history replayed on
   * (re)subscribing, which screen readers must not hear one by one. Infinity until subscribed.
   */
  liveFromSeq: number;
  /** The newest item that arrived live (announced through the chat's live region). */
  lastLive: ChatItem | null;
  /** Microphones, cameras and speakers present, and the chosen one of each ('' = default). */
  devices: DeviceEntry[];
  deviceChoice: DeviceChoice;
  /** device key → connection quality from getStats */
  quality: Record<string, Quality>;
  peers: Record<string, PeerView>;
  transfers: TransferView[];
  /** `rnnoise`: the microphone goes through RNNoise. */
  local: {
    mic: boolean;
    cam: boolean;
    screen: boolean;
    camera: MediaStream | null;
    screenStream: MediaStream | null;
    rnnoise?: boolean;
    /** Labels of the tracks in use, after a switch (diagnostics and the device menus). */
    micLabel?: string;
    cameraLabel?: string;
  };
}

export function initialRoomState(roomId: string, me: { userId: string; deviceId: string }, myName: string, weakKey: boolean, fingerprint = ''): RoomViewState {
  return {
    roomId,
    me,
    myName,
    host: '',
    isHost: false,
    role: 'guest',
    locked: false,
    lobby: false,
    knocks: {},
    guestsMayShare: false,
    maxParticipants: 8,
    members: [],
    presence: {},
    names: {},
    typing: {},
    timeline: [],
    unread: 0,
    chatOpen: true,
    connection: 'connecting',
    banner: null,
    ended: null,
    weakKey,
    fingerprint,
    keyMismatch: {},
    keyWrong: false,
    liveFromSeq: Infinity,
    lastLive: null,
    quality: {},
    devices: [],
    deviceChoice: DEFAULT_CHOICE,
    peers: {},
    transfers: [],
    local: { mic: false, cam: false, screen: false, camera: null, screenStream: null },
  };
}

export function applySummary(s: RoomViewState, sum: RoomSummary): RoomViewState {
  const presence: Record<string, DevicePresence[]> = {};
  for (const c of sum.connected) {
    (presence[c.user_id] ??= []).push({ deviceId: c.device_id, serverName: c.display_name });
  }
  return {
    ...s,
    host: sum.host,
    isHost: sum.is_host,
    role: sum.role ?? (sum.is_host ? 'host' : 'guest'),
    locked: sum.locked,
    lobby: sum.lobby ?? false,
    knocks: Object.fromEntries((sum.knocks ?? []).map((k) => [k.user_id, { name: k.display_name, expiresTs: k.expires_ts }])),
    guestsMayShare: sum.guests_may_share ?? false,
    maxParticipants: sum.max_participants,
    members: sum.members,
    presence,
    liveFromSeq: sum.latest_seq,
  };
}

/** `userId` is now `role`; a new host's predecessor is a guest. Our own role and authority follow. */
export function applyRole(s: RoomViewState, userId: string, role: Role, previous?: string): RoomViewState {
  let host = s.host;
  const roleOf = (m: Member): Role => {
    if (m.user_id === userId) return role;
    if (role === 'host' && (m.user_id === previous || m.user_id === s.host)) return 'guest';
    return m.role;
  };
  if (role === 'host') host = userId;
  const members = s.members.map((m) => ({ ...m, role: roleOf(m) }));
  const mine: Role = s.me.userId === userId ? role : role === 'host' && (s.me.userId === previous || s.me.userId === s.host) ? 'guest' : s.role;
  return { ...s, host, members, role: mine, isHost: mine !== 'guest', knocks: mine === 'guest' ? {} : s.knocks };
}

/** A knock at the lobby, or a host's answer to one: hosts keep the waiting ones. */
export function applyKnock(s: RoomViewState, k: KnockContent): RoomViewState {
  const knocks = { ...s.knocks };
  if (k.state === 'pending') knocks[k.user_id] = { name: k.display_name, expiresTs: k.expires_ts };
  else delete knocks[k.user_id];
  return { ...s, knocks };
}

/** The knocks still waiting at `now`, oldest expiry first. */
export function waitingKnocks(s: RoomViewState, now: number): Array<{ userId: string; name: string }> {
  return Object.entries(s.knocks)
    .filter(([, k]) => k.expiresTs > now)
    .sort((a, b) => a[1].expiresTs - b[1].expiresTs)
    .map(([userId, k]) => ({ userId, name: k.name }));
}

/** Whether `userId` is a host (the host or a co-host). */
export function isHostUser(s: RoomViewState, userId: string): boolean {
  return userId === s.host || s.members.some((m) => m.user_id === userId && m.role !== 'guest' && m.membership === 'joined');
}

/** Whether we may make invite links now: hosts always, everyone while the host lets guests share. */
export function canShare(s: RoomViewState): boolean {
  return s.isHost || s.guestsMayShare;
}

/** Insert keeping seq order; a seq already present, or a (sender, mid) already shown, is dropped. */
export function addChatItem(s: RoomViewState, item: ChatItem): RoomViewState {
  const tl = s.timeline;
  if (tl.some((i) => i.seq === item.seq)) return s;
  if (item.mid && tl.some((i) => i.mid === item.mid && i.sender === item.sender)) return s;
  let pos = tl.length;
  while (pos > 0 && tl[pos - 1]!.seq > item.seq) pos--;
  const timeline = [...tl.slice(0, pos), item, ...tl.slice(pos)];
  const fromOther = item.sender !== s.me.userId && item.kind !== 'system';
  const live = item.seq > s.liveFromSeq;
  return { ...s, timeline, unread: fromOther && !s.chatOpen ? s.unread + 1 : s.unread, lastLive: live ? item : s.lastLive };
}

export function setChatOpen(s: RoomViewState, open: boolean): RoomViewState {
  return { ...s, chatOpen: open, unread: open ? 0 : s.unread };
}

export function applyPresence(s: RoomViewState, userId: string, deviceId: string, serverName: string, online: boolean): RoomViewState {
  const devices = (s.presence[userId] ?? []).filter((d) => d.deviceId !== deviceId);
  if (online) devices.push({ deviceId, serverName });
  const presence = { ...s.presence };
  if (devices.length) presence[userId] = devices;
  else delete presence[userId];
  const typing = { ...s.typing };
  if (!online) delete typing[`${userId}|${deviceId}`];
  return { ...s, presence, typing };
}

export function applyTyping(s: RoomViewState, userId: string, deviceId: string, typing: boolean): RoomViewState {
  const key = `${userId}|${deviceId}`;
  if (!!s.typing[key] === typing) return s;
  const next = { ...s.typing };
  if (typing) next[key] = true;
  else delete next[key];
  return { ...s, typing: next };
}

export function applyMember(s: RoomViewState, userId: string, displayName: string, membership: Member['membership']): RoomViewState {
  const existing = s.members.find((m) => m.user_id === userId);
  const members = existing
    ? s.members.map((m) => (m.user_id === userId ? { ...m, membership, display_name: displayName } : m))
    : [...s.members, { user_id: userId, display_name: displayName, role: userId === s.host ? 'host' : 'guest', membership } as Member];
  // Leaving ends a co-host's role; one who came in is no longer knocking.
  const left = membership !== 'joined';
  const members2 = left ? members.map((m) => (m.user_id === userId && m.role === 'cohost' ? { ...m, role: 'guest' as Role } : m)) : members;
  const knocks = { ...s.knocks };
  delete knocks[userId];
  const mine = left && userId === s.me.userId && s.role === 'cohost' ? { role: 'guest' as Role, isHost: false } : {};
  return { ...s, members: members2, knocks, ...mine };
}

/** The name to show for a user: the encrypted profile name if we have one, else the server label. */
export function displayName(s: RoomViewState, userId: string): string {
  if (userId === s.me.userId) return s.myName || 'You';
  return s.names[userId] ?? s.members.find((m) => m.user_id === userId)?.display_name ?? s.presence[userId]?.[0]?.serverName ?? userId;
}

/** People who are here, each with how many devices are connected. */
export function whoIsHere(s: RoomViewState): Array<{ userId: string; name: string; devices: number; isHost: boolean }> {
  return Object.entries(s.presence)
    .map(([userId, devs]) => ({ userId, name: displayName(s, userId), devices: devs.length, isHost: userId === s.host }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function typingNames(s: RoomViewState): string[] {
  const users = new Set(Object.keys(s.typing).map((k) => k.slice(0, k.lastIndexOf('|'))));
  users.delete(s.me.userId);
  return [...users].map((u) => displayName(s, u));
}
