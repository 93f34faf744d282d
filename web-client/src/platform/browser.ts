/**
 * The browser's implementations of what the logic modules take as parameters: WebSocket,
 * RTCPeerConnection, media capture and storage. Only the UI layer imports this file.
 */
import type { WebSocketLike } from '../protocol/socket';
import type { AttentionBackend, MediaBackend } from '../state/roomSession';
import { API_BASE } from '../protocol/types';
import type { ByteSource } from '../files/chunks';

export const browserMedia: MediaBackend = {
  getUserMedia: (c) => navigator.mediaDevices.getUserMedia(c),
  getDisplayMedia: (c) => navigator.mediaDevices.getDisplayMedia(c),
  createStream: (tracks) => new MediaStream(tracks),
  // Lazily: the WASM is large and only needed by those who choose it.
  denoise: async (mic) => (await import('./rnnoise')).denoise(mic),
  enumerateDevices: () => navigator.mediaDevices.enumerateDevices(),
  onDeviceChange: (fn) => {
    navigator.mediaDevices.addEventListener('devicechange', fn);
    return () => navigator.mediaDevices.removeEventListener('devicechange', fn);
  },
};

export const wsFactory = (url: string): WebSocketLike => new WebSocket(url) as unknown as WebSocketLike;

export const createPeerConnection = (config: RTCConfiguration): RTCPeerConnection => new RTCPeerConnection(config);

/** The live socket's URL. Naming the room lets the server serve all of a room's sockets on one
 * of its threads, so that relaying between them wakes no other thread; it is a hint only. */
export function wsUrl(roomId: string): string {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${API_BASE}/ws?room=${encodeURIComponent(roomId)}`;
}

export function randomHex(bytes = 16): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** The page's URL without its fragment, for building invite links. */
export function pageBase(): string {
  return location.href.split('#')[0] ?? '';
}

/** A File or Blob as a ByteSource; `pieces` reads through one reused buffer where the engine can (BYOB). */
export function blobSource(file: Blob): ByteSource {
  return {
    size: file.size,
    read: async (s, e) => new Uint8Array(await file.slice(s, e).arrayBuffer()),
    pieces: async function* (start: number) {
      const stream = file.slice(start).stream();
      let reader: ReadableStreamBYOBReader | null = null;
      try {
        reader = stream.getReader({ mode: 'byob' });
      } catch {
        reader = null; // not a byte stream in this engine: plain reads (each a new buffer)
      }
      if (!reader) {
        const plain = stream.getReader();
        for (;;) {
          const { value, done } = await plain.read();
          if (done) return;
          yield value;
        }
      }
      let buffer = new ArrayBuffer(1024 * 1024);
      try {
        for (;;) {
          const { value, done } = await reader.read(new Uint8Array(buffer));
          if (done || !value) return;
          yield value;
          buffer = value.buffer as ArrayBuffer;
        }
      } finally {
        reader.releaseLock();
      }
    },
  };
}

/** Title badge and system notifications for a hidden tab (the latter only once the user allowed them). */
export const browserAttention: AttentionBackend = {
  setTitle: (title) => {
    document.title = title;
  },
  notify: (title, body) => {
    if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
    try {
      // One tag per room tab: a burst of messages replaces the notification instead of stacking up.
      new Notification(title, { body, tag: 'confab-room' });
    } catch {
      /* some platforms only allow notifications from a service worker: the title badge remains */
    }
  },
};

export type NotificationChoice = NotificationPermission | 'unsupported';

export function notificationPermission(): NotificationChoice {
  return typeof Notification === 'undefined' ? 'unsupported' : Notification.permission;
}

export async function requestNotifications(): Promise<NotificationChoice> {
  if (typeof Notification === 'undefined') return 'unsupported';
  return Notification.requestPermission();
}
