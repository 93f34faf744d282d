/**
 * Wire types of the Confab client protocol v1 (homeserver/PROTOCOL.md), kept apart from behaviour.
 * Field names are the wire's snake_case on purpose: these objects are what goes over the network.
 */
import { english, type MessageKey, type Translate } from '../i18n/i18n';

export const API_BASE = '/_confab/client/v1';

export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

/** `GET /rooms/{room_id}/ice_servers`: STUN, and TURN with credentials for a member of the room. */
export interface IceGrant {
  ice_servers: IceServer[];
  /** How long the TURN credentials stay valid from now; null without TURN. */
  expires_in_ms: number | null;
}

export interface ServerConfig {
  server_name: string;
  max_participants: number;
  /** STUN only: TURN credentials come with the room (`IceGrant`). */
  ice_servers: IceServer[];
  limits: { max_event_bytes: number; max_frame_bytes: number; messages_per_second: number };
}

export interface Session {
  user_id: string;
  device_id: string;
  access_token: string;
  display_name: string;
}

export interface Whoami {
  user_id: string;
  device_id: string;
  display_name: string;
}

export interface ConnectedDevice {
  user_id: string;
  device_id: string;
  display_name: string;
}

export type Membership = 'joined' | 'left' | 'kicked';

export interface Member {
  user_id: string;
  display_name: string;
  role: Role;
  membership: Membership;
}

/** The host (one) and the co-hosts lock, kick, invite, change settings and answer knocks; only the host names co-hosts and closes the room. */
export type Role = 'host' | 'cohost' | 'guest';

/** A newcomer waiting at a locked room's lobby, as hosts see it. */
export interface KnockView {
  user_id: string;
  display_name: string;
  state: 'pending' | 'admitted' | 'refused';
  expires_ts: number;
}

export interface RoomSummary {
  room_id: string;
  origin: string;
  host: string;
  locked: boolean;
  created_ts: number;
  expires_ts: number | null;
  max_participants: number;
  connected: ConnectedDevice[];
  members: Member[];
  latest_seq: number;
  is_host: boolean;
  /** Whether any joined member may make invite links (a setting of the host's). */
  guests_may_share: boolean;
  /** Whether the caller may make invite links now. */
  can_share: boolean;
  /** Whether a newcomer with a valid link who finds the room locked knocks. */
  lobby: boolean;
  /** The caller's role. */
  role: Role;
  /** Knocks waiting for an answer (for hosts). */
  knocks: KnockView[];
}

/** `POST /rooms/{room_id}/settings`: the settings to change; those left out keep their value. */
export interface SettingsChange {
  guests_may_share?: boolean;
  lobby?: boolean;
}

/** The answer to a kick: which invites it revoked (those the member joined with that were still valid). */
export interface KickResult {
  room_id: string;
  user_id: string;
  kicked: boolean;
  invite_revoked: boolean;
  revoked_invites: string[];
}

export interface Invite {
  invite_id: string;
  token?: string;
  room_id?: string;
  created_ts: number;
  expires_ts: number | null;
  max_uses: number | null;
  uses: number;
  revoked?: boolean;
  /** Who made it: the host, or a member while guests may share. */
  created_by?: string;
}

export interface ChatContent {
  type: 'chat';
  kind: string;
  ciphertext: string;
}
export interface MemberContent {
  type: 'member';
  user_id: string;
  display_name: string;
  membership: Membership;
}
export interface LockContent {
  type: 'lock';
  locked: boolean;
}
/** The room's settings after a change (every setting). */
export interface SettingsContent {
  type: 'settings';
  guests_may_share: boolean;
  lobby?: boolean;
  /** The settings this change set to a new value. */
  changed?: string[];
}
/** `user_id` is now `role`; after a succession `previous` (the host who left for good) is a guest. */
export interface RoleContent {
  type: 'role';
  user_id: string;
  role: Role;
  reason: 'promoted' | 'demoted' | 'succession';
  previous?: string;
}
/** A newcomer knocked at the locked room (`pending`), or a host answered. */
export interface KnockContent {
  type: 'knock';
  user_id: string;
  display_name: string;
  state: KnockView['state'];
  expires_ts: number;
}
export type EventContent = ChatContent | MemberContent | LockContent | SettingsContent | RoleContent | KnockContent;

export interface RoomEvent {
  room_id: string;
  seq: number;
  ts: number;
  sender: string;
  device_id: string;
  content: EventContent;
}

export interface DeviceRef {
  user_id: string;
  device_id: string;
}

/** Messages the client sends over the WebSocket (without the optional `id`). */
export type ClientRequest =
  | { type: 'auth'; token: string }
  | { type: 'subscribe'; room_id: string; since?: number }
  | { type: 'unsubscribe'; room_id: string }
  /** `txn_id`: a resend with the same id gets the first answer rather than a second event. */
  | { type: 'chat'; room_id: string; kind: string; ciphertext: string; txn_id?: string }
  | { type: 'signal'; room_id: string; to: DeviceRef; payload: string }
  | { type: 'typing'; room_id: string; typing: boolean }
  | { type: 'ping' };

export type RequestId = string | number;

export interface AckMessage {
  type: 'ack';
  id: RequestId;
  result: unknown;
}
export interface ErrorMessage {
  type: 'error';
  id?: RequestId;
  request?: string;
  code: string;
  reason: string;
  retry_after_ms?: number;
}
export interface EventMessage extends RoomEvent {
  type: 'event';
}
export interface PresenceMessage {
  type: 'presence';
  room_id: string;
  user_id: string;
  device_id: string;
  display_name: string;
  online: boolean;
}
export interface TypingMessage {
  type: 'typing';
  room_id: string;
  user_id: string;
  device_id: string;
  typing: boolean;
}
export interface SignalMessage {
  type: 'signal';
  room_id: string;
  from: DeviceRef;
  payload: string;
}
export interface KickedMessage {
  type: 'kicked';
  room_id: string;
}
export interface RoomClosedMessage {
  type: 'room_closed';
  room_id: string;
  reason: 'closed' | 'expired';
}
export interface ReplacedMessage {
  type: 'replaced';
  room_id: string;
}
export interface ShutdownMessage {
  type: 'shutdown';
  reason: string;
  retry_after_ms: number;
}

export type ServerMessage =
  | AckMessage
  | ErrorMessage
  | EventMessage
  | PresenceMessage
  | TypingMessage
  | SignalMessage
  | KickedMessage
  | RoomClosedMessage
  | ReplacedMessage
  | ShutdownMessage;

/** The error body of every refused REST call and every WebSocket `error`. */
export class ConfabError extends Error {
  constructor(
    readonly code: string,
    readonly reason: string,
    readonly status = 0,
    readonly retryAfterMs?: number,
  ) {
    super(`${code}: ${reason}`);
    this.name = 'ConfabError';
  }
}

/**
 * How long to wait before trying again after an error that a later attempt may not meet (the
 * server's own `retry_after_ms`, else a second); null for errors that will not change by waiting.
 */
export function retryDelay(err: unknown): number | null {
  if (!(err instanceof ConfabError)) return null;
  if (err.code !== 'rate_limited' && err.code !== 'unavailable') return null;
  return err.retryAfterMs ?? 1000;
}

/** A sentence a person can act on, for each machine code the client may show (else the server's reason). */
const KNOWN_ERRORS = new Set([
  'room_locked', 'invite_required', 'invite_invalid', 'invite_expired', 'invite_revoked', 'invite_used_up', 'kicked',
  'room_not_found', 'room_full', 'too_many_rooms', 'too_many_invites', 'knock_refused', 'too_many_knocks', 'too_many_connections', 'unauthorized', 'event_too_large', 'unavailable',
]);

/** A sentence for the user: known codes from the catalog (`error.<code>`), else the server's reason. */
export function describeError(err: unknown, t: Translate = english): string {
  if (err instanceof ConfabError) {
    return KNOWN_ERRORS.has(err.code) ? t(`error.${err.code}` as MessageKey) : (err.reason ?? err.code);
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
