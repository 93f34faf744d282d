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
  | { candidate: IceCandidateLike | null }
  /** From a polite side with a fresh connection: "offer me". */
  | { hello: true };

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
  private offerWanted = false;
  private hasRemote = false;
  private helloSent = false;
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

  /**
   * Wire to `negotiationneeded`. The offer is made in the same queue as incoming signals, so it
   * never runs beside an incoming offer's rollback. An offer wanted while not stable is made as
   * soon as the state returns to stable.
   *
   * The polite side never makes the first offer of a connection: it sends `hello` and waits for
   * the impolite side's offer. Glare is then impossible when two devices meet, which matters
   * beyond elegance: Chromium (156) sometimes never gathers ICE candidates again on a connection
   * whose first offer was rolled back, leaving the pair "stable" with no media.
   */
  negotiationNeeded(): Promise<void> {
    return this.enqueue(() => this.makeOffer());
  }

  /** True once a remote description has been applied: the connection has been negotiated once. */
  get established(): boolean {
    return this.hasRemote;
  }

  private async makeOffer(): Promise<void> {
    if (this.closed) return;
    if (this.pc.signalingState !== 'stable' || (this.polite && !this.hasRemote)) {
      this.offerWanted = true;
      if (this.polite && !this.hasRemote && !this.helloSent) {
        this.helloSent = true;
        this.send({ hello: true });
      }
      return;
    }
    this.offerWanted = false;
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
      // A hello of ours may have been lost too.
      if (this.polite && !this.hasRemote) this.helloSent = false;
      this.pc.restartIce();
    });
  }

  /** Handle one decrypted signaling message; messages are applied in arrival order. */
  receive(msg: NegotiationMessage): Promise<void> {
    return this.enqueue(async () => {
      await this.apply(msg);
      if (this.offerWanted && this.pc.signalingState === 'stable' && (!this.polite || this.hasRemote)) await this.makeOffer();
    });
  }

  private enqueue(job: () => Promise<void>): Promise<void> {
    const run = this.queue.then(job, job);
    this.queue = run.catch((err: unknown) => this.events.error?.(err));
    return run;
  }

  private async apply(msg: NegotiationMessage): Promise<void> {
    if (this.closed) return;
    if ('hello' in msg) {
      // The polite side waits for us: offer unless an offer of ours is already on its way.
      if (!this.polite && this.pc.signalingState === 'stable') await this.makeOffer();
      return;
    }
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
        this.hasRemote = true;
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
