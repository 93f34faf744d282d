/**
 * REST client for /_confab/client/v1: one place that builds URLs, adds the bearer token and turns
 * every refusal into a ConfabError carrying the server's machine code.
 */
import {
  API_BASE,
  ConfabError,
  type IceGrant,
  type Invite,
  type KickResult,
  type RoomEvent,
  type RoomSummary,
  type ServerConfig,
  type Session,
  type Role,
  type SettingsChange,
  type Whoami,
} from './types';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export class RestClient {
  private token: string | null = null;

  /** `origin` is '' in the browser (same origin) or e.g. 'http://127.0.0.1:8008' in tests. */
  constructor(
    private readonly origin: string,
    private readonly fetchFn: FetchLike = (input, init) => fetch(input, init),
  ) {}

  setToken(token: string | null): void {
    this.token = token;
  }

  private async call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth && this.token) headers['Authorization'] = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await this.fetchFn(`${this.origin}${API_BASE}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (e) {
      throw new ConfabError('network', `The server cannot be reached (${String(e)})`, 0);
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown = undefined;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    if (!res.ok) {
      const o = (json ?? {}) as { code?: string; reason?: string; retry_after_ms?: number };
      throw new ConfabError(o.code ?? 'http_' + res.status, o.reason ?? res.statusText, res.status, o.retry_after_ms);
    }
    return json as T;
  }

  config(): Promise<ServerConfig> {
    return this.call('GET', '/config', undefined, false);
  }
  createSession(display_name: string): Promise<Session> {
    return this.call('POST', '/sessions', { display_name }, false);
  }
  whoami(): Promise<Whoami> {
    return this.call('GET', '/sessions/me');
  }
  deleteSession(): Promise<void> {
    return this.call('DELETE', '/sessions/me');
  }
  createRoom(): Promise<RoomSummary> {
    return this.call('POST', '/rooms', {});
  }
  listRooms(): Promise<{ rooms: RoomSummary[] }> {
    return this.call('GET', '/rooms');
  }
  room(roomId: string): Promise<RoomSummary> {
    return this.call('GET', `/rooms/${encodeURIComponent(roomId)}`);
  }
  join(roomId: string, inviteToken?: string): Promise<RoomSummary> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/join`, inviteToken ? { invite_token: inviteToken } : {});
  }
  leave(roomId: string): Promise<void> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/leave`, {});
  }
  events(roomId: string, since: number, limit = 500): Promise<{ events: RoomEvent[]; latest_seq: number }> {
    return this.call('GET', `/rooms/${encodeURIComponent(roomId)}/events?since=${since}&limit=${limit}`);
  }
  createInvite(roomId: string, opts: { expires_in_secs?: number; max_uses?: number } = {}): Promise<Invite> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/invites`, opts);
  }
  listInvites(roomId: string): Promise<{ invites: Invite[] }> {
    return this.call('GET', `/rooms/${encodeURIComponent(roomId)}/invites`);
  }
  revokeInvite(roomId: string, inviteId: string): Promise<void> {
    return this.call('DELETE', `/rooms/${encodeURIComponent(roomId)}/invites/${encodeURIComponent(inviteId)}`);
  }
  setLocked(roomId: string, locked: boolean): Promise<RoomSummary> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/${locked ? 'lock' : 'unlock'}`, {});
  }
  /** Changes room settings (hosts only); answers the room summary. */
  setSettings(roomId: string, change: SettingsChange): Promise<RoomSummary> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/settings`, change);
  }
  /** Makes a member a co-host or a guest again (the host only). */
  setRole(roomId: string, userId: string, role: Exclude<Role, 'host'>): Promise<{ room_id: string; user_id: string; role: Role }> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/role`, { user_id: userId, role });
  }
  /** Lets a knocker in, or turns them away (hosts). */
  answerKnock(roomId: string, userId: string, admit: boolean): Promise<{ room_id: string; user_id: string; state: string }> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/knocks`, { user_id: userId, admit });
  }
  /** Kicks a joined member or one who left; revokes the invites they joined with. */
  kick(roomId: string, userId: string): Promise<KickResult> {
    return this.call('POST', `/rooms/${encodeURIComponent(roomId)}/kick`, { user_id: userId });
  }
  /** STUN and TURN with fresh credentials; members of the room only. */
  iceServers(roomId: string): Promise<IceGrant> {
    return this.call('GET', `/rooms/${encodeURIComponent(roomId)}/ice_servers`);
  }
  closeRoom(roomId: string): Promise<void> {
    return this.call('DELETE', `/rooms/${encodeURIComponent(roomId)}`);
  }
}
