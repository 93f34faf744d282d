/**
 * App-wide services for the components: the REST client, what this browser remembers, the server
 * config, and the guest session (created on first need, reused after reloads).
 */
import { createContext, useContext } from 'react';
import { RestClient } from '../protocol/rest';
import { ConfabError, type ServerConfig, type Session } from '../protocol/types';
import { LocalMemory, memoryStore, type KeyValueStore } from '../state/storage';
import { neutralLabel } from '../state/links';
import { pickLanguage, translator, type Lang, type Translate } from '../i18n/i18n';

export function localStore(): KeyValueStore {
  try {
    const k = '__confab_probe';
    localStorage.setItem(k, '1');
    localStorage.removeItem(k);
    return localStorage;
  } catch {
    return memoryStore();
  }
}

/** A stream captured on the pre-join screen, handed to the room so the browser need not ask again. */
export interface JoinHandoff {
  roomId: string;
  preview: MediaStream | null;
  mic: boolean;
  cam: boolean;
  audioDeviceId?: string;
  videoDeviceId?: string;
  noiseSuppression: boolean;
  rnnoise: boolean;
}

export class Services {
  readonly rest = new RestClient('');
  readonly kv = localStore();
  readonly memory = new LocalMemory(this.kv);
  /** Chosen once from the browser's languages (navigator.languages). */
  readonly lang: Lang = pickLanguage(typeof navigator === 'undefined' ? [] : navigator.languages);
  readonly t: Translate = translator(this.lang);
  private configPromise: Promise<ServerConfig> | null = null;
  handoff: JoinHandoff | null = null;

  config(): Promise<ServerConfig> {
    this.configPromise ??= this.rest.config().catch((e: unknown) => {
      this.configPromise = null;
      throw e;
    });
    return this.configPromise;
  }

  /** The stored guest session if the server still accepts it, else a new one. */
  async ensureSession(): Promise<Session> {
    const stored = this.memory.session;
    if (stored) {
      this.rest.setToken(stored.access_token);
      try {
        await this.rest.whoami();
        return stored;
      } catch (e) {
        if (!(e instanceof ConfabError) || e.code !== 'unauthorized') throw e;
        this.memory.session = null;
      }
    }
    const label = this.memory.shareName && this.memory.displayName ? this.memory.displayName : neutralLabel();
    const created = await this.rest.createSession(label);
    this.memory.session = created;
    this.rest.setToken(created.access_token);
    return created;
  }

  /** Forget the session (e.g. after changing whether the name is shared with the server). */
  async resetSession(): Promise<void> {
    const s = this.memory.session;
    if (s) {
      this.rest.setToken(s.access_token);
      await this.rest.deleteSession().catch(() => undefined);
    }
    this.memory.session = null;
    this.rest.setToken(null);
  }
}

export const ServicesContext = createContext<Services | null>(null);

/** The message catalog in the browser's language. */
export function useT(): Translate {
  return useServices().t;
}

export function useServices(): Services {
  const s = useContext(ServicesContext);
  if (!s) throw new Error('ServicesContext missing');
  return s;
}
