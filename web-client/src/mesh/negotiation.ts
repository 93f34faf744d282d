/**
 * Perfect negotiation (W3C WebRTC §10.7) for one peer connection, written against a narrow
 * interface so the state machine is unit-tested with a fake connection and run unchanged on the
 * browser's RTCPeerConnection.
 *
 * Roles come from comparing `user_id|device_id` strings: the side with the smaller key is polite
 * (it rolls back its own offer on a collision); the other ignores the colliding offer. Incoming
 * signals are processed strictly one at a time, because decrypting them is asynchronous and a
 * reordered answer/candidate would break the signaling state machine.
 */

export type SdpType = 'offer' | 'answer' | 'pranswer' | 'rollback';
export interface SessionDescriptionLike {
  type: SdpType;
  sdp?: string;
}
export interface IceCandidateLike {
  candidate?: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

/** The slice of RTCPeerConnection that negotiation needs. */
export interface NegotiablePeerConnection {
  readonly signalingState: string;
  readonly localDescription: SessionDescriptionLike | null;
  setLocalDescription(desc?: SessionDescriptionLike): Promise<void>;
  setRemoteDescription(desc: SessionDescriptionLike): Promise<void>;
  addIceCandidate(candidate?: IceCandidateLike | null): Promise<void>;
  restartIce(): void;
}

export type NegotiationMessage =
  | { description: SessionDescriptionLike }
  | { candidate: IceCandidateLike | null };

export function deviceKey(userId: string, deviceId: string): string {
  return `${userId}|${deviceId}`;
}

/** Polite when our key sorts first: both ends compute opposite answers from the same two strings. */
export function isPolite(localKey: string, remoteKey: string): boolean {
  if (localKey === remoteKey) throw new Error('a device cannot negotiate with itself');
  return localKey < remoteKey;
}

export interface NegotiatorEvents {
  /** Rolled back our own offer because the polite side lost a collision. */
  rollback?(): void;
  /** Ignored the remote's colliding offer (impolite side). */
  ignoredOffer?(): void;
  error?(err: unknown): void;
}

export class PerfectNegotiator {
  private makingOffer = false;
  private ignoreOffer = false;
  private settingRemoteAnswerPending = false;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly pc: NegotiablePeerConnection,
    readonly polite: boolean,
    private readonly send: (msg: NegotiationMessage) => void,
    private readonly events: NegotiatorEvents = {},
  ) {}

  close(): void {
    this.closed = true;
  }

  /** Wire to `negotiationneeded`. */
  async negotiationNeeded(): Promise<void> {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc && !this.closed) this.send({ description: { type: desc.type, sdp: desc.sdp ?? '' } });
    } catch (err) {
      this.events.error?.(err);
    } finally {
      this.makingOffer = false;
    }
  }

  /** Wire to `icecandidate` (null = end of candidates). */
  localCandidate(candidate: IceCandidateLike | null): void {
    if (!this.closed) this.send({ candidate });
  }

  /** Wire to ICE failure: asks for a restart, which raises `negotiationneeded` with fresh credentials. */
  iceFailed(): void {
    if (!this.closed) this.pc.restartIce();
  }

  /**
   * After the signaling path was down, an offer of ours may never have arrived: roll it back so
   * negotiation starts over, and restart ICE so both sides exchange fresh credentials.
   */
  async resync(): Promise<void> {
    await this.enqueue(async () => {
      if (this.pc.signalingState === 'have-local-offer') {
        await this.pc.setLocalDescription({ type: 'rollback' });
        this.events.rollback?.();
      }
      this.pc.restartIce();
    });
  }

  /** Handle one decrypted signaling message; messages are applied in arrival order. */
  receive(msg: NegotiationMessage): Promise<void> {
    return this.enqueue(() => this.apply(msg));
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.queue.then(job, job);
    this.queue = run.catch((err: unknown) => this.events.error?.(err));
    return run;
  }

  private async apply(msg: NegotiationMessage): Promise<void> {
    if (this.closed) return;
    if ('description' in msg) {
      const description = msg.description;
      const readyForOffer = !this.makingOffer && (this.pc.signalingState === 'stable' || this.settingRemoteAnswerPending);
      const offerCollision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && offerCollision;
      if (this.ignoreOffer) {
        this.events.ignoredOffer?.();
        return;
      }
      if (offerCollision) {
        // Explicit rollback rather than relying on the implicit one, so older engines behave the same.
        if (this.pc.signalingState === 'have-local-offer') {
          await this.pc.setLocalDescription({ type: 'rollback' });
          this.events.rollback?.();
        }
      }
      if (description.type === 'answer' && this.pc.signalingState !== 'have-local-offer') {
        return; // an answer to an offer we rolled back: stale
      }
      this.settingRemoteAnswerPending = description.type === 'answer';
      try {
        await this.pc.setRemoteDescription(description);
      } finally {
        this.settingRemoteAnswerPending = false;
      }
      if (description.type === 'offer') {
        await this.pc.setLocalDescription();
        const local = this.pc.localDescription;
        if (local && !this.closed) this.send({ description: { type: local.type, sdp: local.sdp ?? '' } });
      }
    } else {
      try {
        await this.pc.addIceCandidate(msg.candidate);
      } catch (err) {
        // Candidates for an offer we ignored are expected to fail.
        if (!this.ignoreOffer) throw err;
      }
    }
  }
}
