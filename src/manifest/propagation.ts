/**
 * Manifest propagation: the announce topic and its validator, head exchange on every new
 * connection, and rate-limited catch-up pulls verified step by step (decision 4).
 *
 * Gossip alone loses nodes that were offline, still forming their mesh or partitioned; head
 * exchange on connect plus hints from status records and call labels close those gaps.
 */
import { createHash } from 'node:crypto'
import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import { logger } from '@libp2p/logger'
import { RateLimiter } from '@libp2p/utils'
import { TypedEventEmitter } from 'main-event'
import { connectedPeers, handleRequests, protocolId, sendRequest, type MoltLibp2p } from '../overlay/index.ts'
import { decodeSignedManifest, encodeSignedManifest, MAX_MANIFEST_BYTES } from './codec.ts'
import { decodeSignedControl, encodeSignedControl, MAX_CONTROL_BYTES, type ControlLog, type ControlVerdict, type SignedControl } from './control.ts'
import { ManifestError, ReplayedManifestError } from './errors.ts'
import {
  decodeAnnounce, decodeHead, decodeManifestReply, decodeManifestRequest, encodeAnnounce, encodeHead,
  encodeManifestReply, encodeManifestRequest, type AnnounceMessage, type Head
} from './wire.ts'
import type { ManifestChain, Verdict } from './chain.ts'
import type { ForkProof, SignedManifest } from './types.ts'
import type { Connection, CounterGroup, PeerId, Startable } from '@libp2p/interface'

const log = logger('molt:manifest:propagation')

/**
 * How a manifest reached this node.
 */
export type ManifestSource = 'local' | 'gossip' | 'catch-up'

/**
 * Events of manifest propagation.
 */
export interface PropagationEvents {
  /** a manifest was verified, chained and stored */
  'manifest:accepted': CustomEvent<{ manifest: SignedManifest, source: ManifestSource, from?: PeerId }>
  /** a stored manifest gained signatures of further authorized keys (same body, same CID) */
  'manifest:cosigned': CustomEvent<{ manifest: SignedManifest, from?: PeerId }>
  /** a peer sent something invalid; nothing was stored or forwarded */
  'manifest:rejected': CustomEvent<{ peer: PeerId, reason: string, error: Error }>
  /** a control message was verified and applied */
  'control:accepted': CustomEvent<{ control: SignedControl, source: ManifestSource, from?: PeerId }>
  /** two validly signed bodies exist at one version: the rollout is halted */
  'rollout:halted': CustomEvent<{ proof: ForkProof }>
}

/**
 * Components propagation needs.
 */
export interface PropagationComponents {
  libp2p: MoltLibp2p
  chain: ManifestChain
  controls: ControlLog
}

/**
 * Options of manifest propagation.
 */
export interface PropagationInit {
  /** the system name, which scopes the topic and protocols */
  system: string

  /**
   * Most manifests one catch-up pull accepts from one peer; a further hint continues later.
   *
   * @default 256
   */
  maxCatchUpDepth?: number

  /**
   * Manifests asked for per pull request.
   *
   * @default 16
   */
  pullBatch?: number

  /**
   * Pulls started per peer per minute, whatever the number of hints.
   *
   * @default 6
   */
  pullsPerPeerPerMinute?: number

  /**
   * Pulls started by this node per minute, over all peers.
   *
   * @default 30
   */
  pullsPerMinute?: number

  /**
   * Every this many milliseconds the node exchanges heads with one connected peer chosen at
   * random, so whatever gossip and the pushes on acceptance missed is caught up in the end.
   *
   * @default 30000
   */
  antiEntropyMs?: number
}

/**
 * Manifest propagation of one node.
 */
export interface ManifestPropagation extends Startable {
  readonly events: TypedEventEmitter<PropagationEvents>

  /**
   * Accepts a manifest locally, gossips it, and submits it directly to every connected peer
   * (they pull it through head exchange), so a short-lived publisher with no mesh yet still
   * reaches the network.
   */
  publish(manifest: SignedManifest): Promise<Verdict>

  /**
   * A higher version (or control sequence) was seen in a head, a status record or a call label
   * from `peer`: a hint, never trusted. Starts a rate-limited pull whose manifests and control
   * messages are verified one by one.
   */
  hint(peer: PeerId, version: number, control?: number): void

  /**
   * Exchanges heads with a peer and returns theirs.
   */
  exchangeHeads(peer: PeerId, signal?: AbortSignal): Promise<Head>

  /**
   * Pulls missing manifests, then missing control messages, from a peer now (still rate
   * limited). Resolves with how many were accepted.
   */
  pull(peer: PeerId, signal?: AbortSignal): Promise<number>

  /**
   * Applies a control message locally, gossips it, and submits it directly to every connected
   * peer.
   */
  publishControl(control: SignedControl): Promise<ControlVerdict>
}

/**
 * The gossipsub topic a system's manifests and fork proofs travel on.
 */
export function announceTopic (system: string): string {
  return `/molt/${system}/announce/1`
}

/** What became of one message. */
type Outcome = 'accepted' | 'cosigned' | 'ignored' | 'ahead' | 'rejected' | 'fork'

/**
 * Two validly signed control messages share one sequence number: the release keys signed
 * conflicting orders. The first one stays; the second is refused.
 */
export class ConflictingControlError extends ManifestError {
  static override readonly name = 'ConflictingControlError'
  override readonly name = 'ConflictingControlError'
}

/** A pull reply holds at most this many manifests, each at most MAX_MANIFEST_BYTES. */
const MAX_PULL_BATCH = 32

/** Rejections are logged once per (peer, reason, message); this bounds that memory. */
const MAX_REMEMBERED_REJECTIONS = 4096

class Propagation implements ManifestPropagation {
  readonly events = new TypedEventEmitter<PropagationEvents>()
  private readonly topic: string
  private readonly headProtocol: string
  private readonly pullProtocol: string
  private readonly maxCatchUpDepth: number
  private readonly pullBatch: number
  private readonly perPeer: RateLimiter
  private readonly global: RateLimiter
  private readonly controlProtocol: string
  private readonly antiEntropyMs: number
  private antiEntropy?: ReturnType<typeof setInterval>
  private readonly pulling = new Map<string, Promise<number>>()
  private readonly rejected = new Set<string>()
  private readonly rejections?: CounterGroup
  private readonly accepted?: CounterGroup
  private readonly shutdown = new AbortController()
  private started = false

  private readonly components: PropagationComponents

  constructor (components: PropagationComponents, init: PropagationInit) {
    this.components = components
    this.topic = announceTopic(init.system)
    this.headProtocol = protocolId(init.system, 'head')
    this.pullProtocol = protocolId(init.system, 'manifests')
    this.maxCatchUpDepth = init.maxCatchUpDepth ?? 256
    this.pullBatch = Math.min(init.pullBatch ?? 16, MAX_PULL_BATCH)
    this.perPeer = new RateLimiter({ points: init.pullsPerPeerPerMinute ?? 6, duration: 60 })
    this.global = new RateLimiter({ points: init.pullsPerMinute ?? 30, duration: 60 })
    this.controlProtocol = protocolId(init.system, 'controls')
    this.antiEntropyMs = init.antiEntropyMs ?? 30_000
    this.rejections = components.libp2p.metrics?.registerCounterGroup('molt_manifest_rejections_total', {
      help: 'messages refused by manifest propagation, by reason'
    })
    this.accepted = components.libp2p.metrics?.registerCounterGroup('molt_manifest_accepted_total', {
      help: 'manifests accepted, by how they arrived'
    })
    this.onConnection = this.onConnection.bind(this)
  }

  readonly [Symbol.toStringTag] = 'molt:manifest-propagation'

  isStarted (): boolean {
    return this.started
  }

  async start (): Promise<void> {
    const { libp2p } = this.components
    const pubsub = libp2p.services.pubsub
    pubsub.topicValidators.set(this.topic, async (peer, message) => await this.validate(peer, message))
    pubsub.subscribe(this.topic)
    await handleRequests(libp2p, this.headProtocol, async (request, { peer }) => {
      const theirs = decodeHead(request)
      this.compareHead(peer, theirs)
      return encodeHead(this.head())
    }, { maxRequestBytes: 256, maxResponseBytes: 256 })
    await handleRequests(libp2p, this.pullProtocol, async (request) => {
      const { from, limit } = decodeManifestRequest(request)
      return encodeManifestReply(this.range(from, Math.min(limit, MAX_PULL_BATCH)))
    }, { maxRequestBytes: 64, maxResponseBytes: MAX_PULL_BATCH * MAX_MANIFEST_BYTES + 64 })
    await handleRequests(libp2p, this.controlProtocol, async (request) => {
      const { from, limit } = decodeManifestRequest(request)
      const out: Uint8Array[] = []
      for (let seq = from; seq < from + Math.min(limit, MAX_PULL_BATCH); seq++) {
        const c = this.components.controls.get(seq)
        if (c == null) break
        out.push(encodeSignedControl(c))
      }
      return encodeManifestReply(out)
    }, { maxRequestBytes: 64, maxResponseBytes: MAX_PULL_BATCH * MAX_CONTROL_BYTES + 64 })
    libp2p.addEventListener('connection:open', this.onConnection)
    this.antiEntropy = setInterval(() => {
      const peers = connectedPeers(libp2p)
      const peer = peers[Math.floor(Math.random() * peers.length)]
      if (peer != null) {
        this.exchangeHeads(peer, AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(10_000)])).catch(err => {
          log.trace('anti-entropy head exchange with %p failed - %e', peer, err)
        })
      }
    }, this.antiEntropyMs)
    this.started = true
    // peers already connected (a user-supplied libp2p node) never fire connection:open
    for (const connection of libp2p.getConnections()) {
      this.onConnection(new CustomEvent('connection:open', { detail: connection }))
    }
  }

  async stop (): Promise<void> {
    const { libp2p } = this.components
    this.started = false
    clearInterval(this.antiEntropy)
    this.shutdown.abort()
    libp2p.removeEventListener('connection:open', this.onConnection)
    libp2p.services.pubsub.topicValidators.delete(this.topic)
    libp2p.services.pubsub.unsubscribe(this.topic)
    await libp2p.unhandle(this.headProtocol)
    await libp2p.unhandle(this.pullProtocol)
    await libp2p.unhandle(this.controlProtocol)
    await Promise.allSettled(this.pulling.values())
  }

  private head (): Head {
    const head = this.components.chain.head()
    return { version: head.body.version, cid: head.cid, control: this.components.controls.state().seq }
  }

  private range (from: number, limit: number): Uint8Array[] {
    const out: Uint8Array[] = []
    for (let v = from; v < from + limit; v++) {
      const m = this.components.chain.get(v)
      if (m == null) {
        break
      }
      out.push(encodeSignedManifest(m))
    }
    return out
  }

  private onConnection (event: CustomEvent<Connection>): void {
    const peer = event.detail.remotePeer
    if (!this.started) {
      return
    }
    this.exchangeHeads(peer, this.shutdown.signal).catch(err => {
      // peers that do not speak molt's head protocol are not an error
      log.trace('head exchange with %p failed - %e', peer, err)
    })
  }

  async exchangeHeads (peer: PeerId, signal?: AbortSignal): Promise<Head> {
    const reply = await sendRequest(this.components.libp2p, peer, this.headProtocol, encodeHead(this.head()), {
      signal: signal ?? AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(10_000)]),
      maxResponseBytes: 256
    })
    let theirs: Head
    try {
      theirs = decodeHead(reply)
    } catch (err) {
      this.reject(peer, err as Error, reply)
      throw err
    }
    this.compareHead(peer, theirs)
    return theirs
  }

  private compareHead (peer: PeerId, theirs: Head): void {
    if (theirs.version > this.components.chain.head().body.version || theirs.control > this.components.controls.state().seq) {
      this.hint(peer, theirs.version, theirs.control)
    }
  }

  hint (peer: PeerId, version: number, control: number = 0): void {
    if (!this.started || (version <= this.components.chain.head().body.version && control <= this.components.controls.state().seq)) {
      return
    }
    this.pull(peer).catch(err => {
      log('pull from %p after a hint of version %d failed - %e', peer, version, err)
    })
  }

  async pull (peer: PeerId, signal?: AbortSignal): Promise<number> {
    const key = peer.toString()
    const running = this.pulling.get(key)
    if (running != null) {
      return await running
    }
    try {
      this.perPeer.consume(key)
      this.global.consume('all')
    } catch {
      log('pull from %p refused by the rate limit', peer)
      this.rejections?.increment({ RateLimited: true })
      return 0
    }
    const pulling = this.runPull(peer, signal ?? this.shutdown.signal).then((accepted) => {
      if (accepted > 0) {
        // the limit is for hints that lead nowhere: a pull that brought something back is free
        this.perPeer.reward(key)
        this.global.reward('all')
      }
      return accepted
    }).finally(() => {
      this.pulling.delete(key)
    })
    this.pulling.set(key, pulling)
    return await pulling
  }

  private async runPull (peer: PeerId, signal: AbortSignal): Promise<number> {
    const { chain, controls } = this.components
    // manifests first: the policy control messages are verified under comes from the chain
    const manifests = await this.pullLog(peer, signal, this.pullProtocol, MAX_MANIFEST_BYTES, () => chain.head().body.version + 1, async (bytes) => await this.consider(peer, bytes, 'catch-up'))
    const controlled = await this.pullLog(peer, signal, this.controlProtocol, MAX_CONTROL_BYTES, () => controls.state().seq + 1, async (bytes) => await this.considerControl(peer, bytes, 'catch-up'))
    return manifests + controlled
  }

  /**
   * Pulls consecutive entries of a log (the chain, the control log) from `next()` on, verifying
   * each as it comes; stops at the first invalid one, at the catch-up depth, or when the peer
   * has no more.
   */
  private async pullLog (peer: PeerId, signal: AbortSignal, protocol: string, maxEntryBytes: number, next: () => number, consider: (bytes: Uint8Array) => Promise<Outcome>): Promise<number> {
    let accepted = 0
    const maxReply = MAX_PULL_BATCH * maxEntryBytes + 64
    while (accepted < this.maxCatchUpDepth && !signal.aborted) {
      const limit = Math.min(this.pullBatch, this.maxCatchUpDepth - accepted)
      const reply = await sendRequest(this.components.libp2p, peer, protocol, encodeManifestRequest({ from: next(), limit }), {
        signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]),
        maxResponseBytes: maxReply
      })
      let encoded: Uint8Array[]
      try {
        encoded = decodeManifestReply(reply, maxReply, limit)
      } catch (err) {
        this.reject(peer, err as Error, reply)
        return accepted
      }
      for (const bytes of encoded) {
        const outcome = await consider(bytes)
        if (outcome === 'accepted') {
          accepted++
        } else if (outcome !== 'ignored' && outcome !== 'cosigned') {
          // a peer that serves an invalid or forked log gets no further trust in this pull
          return accepted
        }
      }
      if (encoded.length < limit) {
        break
      }
    }
    return accepted
  }

  /**
   * Runs one encoded control message through the control log, emitting the events.
   */
  private async considerControl (peer: PeerId | undefined, bytes: Uint8Array, source: ManifestSource): Promise<Outcome> {
    const { chain, controls } = this.components
    let control: SignedControl
    try {
      control = await decodeSignedControl(bytes)
      const verdict = await controls.consider(control, chain.policyFor(chain.head().body.version + 1))
      switch (verdict.kind) {
        case 'accepted':
          log('applied control %d (%s, scope %d) from %p by %s', control.body.seq, control.body.action.type, control.body.scope, peer, source)
          this.events.safeDispatchEvent('control:accepted', { detail: { control, source, ...(peer != null ? { from: peer } : {}) } })
          if (source === 'catch-up') {
            void this.gossipBytes({ type: 'control', control: bytes })
          }
          this.pushHeads(peer)
          return 'accepted'
        case 'old':
          if (source === 'gossip' && peer != null) {
            this.reject(peer, new ReplayedManifestError(`control ${control.body.seq} replayed; applied up to ${controls.state().seq}`), bytes)
          }
          return 'ignored'
        case 'conflict':
          if (peer != null) {
            this.reject(peer, new ConflictingControlError(`a second validly signed control message at sequence ${control.body.seq}`), bytes)
          }
          return 'ignored'
        case 'ahead':
          if (peer != null) {
            this.hint(peer, 0, verdict.seq)
          }
          return 'ahead'
      }
    } catch (err) {
      if (peer != null) {
        this.reject(peer, err as Error, bytes)
      }
      return 'rejected'
    }
  }

  /**
   * Runs one encoded manifest through the chain and reports what happened, emitting the events.
   */
  private async consider (peer: PeerId, bytes: Uint8Array, source: ManifestSource): Promise<Outcome> {
    let manifest: SignedManifest
    let verdict: Verdict
    try {
      manifest = await decodeSignedManifest(bytes)
      verdict = await this.components.chain.consider(manifest)
    } catch (err) {
      this.reject(peer, err as Error, bytes)
      return 'rejected'
    }
    switch (verdict.kind) {
      case 'accepted':
        log('accepted manifest %d (%c) from %p by %s', manifest.body.version, manifest.cid, peer, source)
        this.events.safeDispatchEvent('manifest:accepted', { detail: { manifest, source, from: peer } })
        this.accepted?.increment({ [source]: true })
        if (source === 'catch-up') {
          // peers in our mesh that missed the gossip get it now; those that saw it dedupe it
          void this.gossip(manifest)
        }
        // gossip cannot reach a peer whose subscription this node has not seen yet (a mesh still
        // forming): tell those peers our new head, and they pull
        this.pushHeads(peer)
        return 'accepted'
      case 'cosigned': {
        const merged = this.components.chain.get(manifest.body.version) ?? manifest
        this.events.safeDispatchEvent('manifest:cosigned', { detail: { manifest: merged, from: peer } })
        return 'cosigned'
      }
      case 'old':
      case 'duplicate':
        // gossip dedupes identical bytes, so what arrives here again is a replay: harmless, but
        // worth one log line per (peer, message)
        if (source === 'gossip') {
          this.reject(peer, new ReplayedManifestError(`manifest ${manifest.body.version} replayed; the head is ${this.components.chain.head().body.version}`), bytes)
        }
        return 'ignored'
      case 'halted':
        return 'ignored'
      case 'ahead':
        this.hint(peer, verdict.version)
        return 'ahead'
      case 'equivocation':
        await this.announceFork(verdict.proof)
        return 'fork'
    }
  }

  private async announceFork (proof: ForkProof): Promise<void> {
    log.error('equivocation at version %d: %c and %c - rollout halted', proof.version, proof.a.cid, proof.b.cid)
    this.events.safeDispatchEvent('rollout:halted', { detail: { proof } })
    try {
      await this.components.libp2p.services.pubsub.publish(this.topic, encodeAnnounce({
        type: 'fork', a: encodeSignedManifest(proof.a), b: encodeSignedManifest(proof.b)
      }))
    } catch (err) {
      log('could not gossip the fork proof - %e', err)
    }
  }

  /**
   * The announce topic's validator; docs/propagation.md holds the table it follows.
   */
  private async validate (peer: PeerId, message: Message): Promise<TopicValidatorResult> {
    let announce
    try {
      announce = decodeAnnounce(message.data, 2 * MAX_MANIFEST_BYTES + 64)
    } catch (err) {
      this.reject(peer, err as Error, message.data)
      return TopicValidatorResult.Reject
    }
    if (announce.type === 'control') {
      const outcome = await this.considerControl(peer, announce.control, 'gossip')
      return outcome === 'accepted' ? TopicValidatorResult.Accept : outcome === 'rejected' ? TopicValidatorResult.Reject : TopicValidatorResult.Ignore
    }
    if (announce.type === 'manifest') {
      const outcome = await this.consider(peer, announce.manifest, 'gossip')
      switch (outcome) {
        case 'accepted':
        case 'cosigned':
          return TopicValidatorResult.Accept
        case 'rejected': return TopicValidatorResult.Reject
        // the fork proof travels in its own message; the conflicting body itself is not relayed
        default: return TopicValidatorResult.Ignore
      }
    }
    try {
      const proof: ForkProof = {
        version: -1,
        a: await decodeSignedManifest(announce.a),
        b: await decodeSignedManifest(announce.b)
      }
      proof.version = proof.a.body.version
      const fresh = await this.components.chain.recordForkProof(proof)
      if (fresh) {
        log.error('fork proof received from %p at version %d - rollout halted', peer, proof.version)
        this.events.safeDispatchEvent('rollout:halted', { detail: { proof } })
        return TopicValidatorResult.Accept
      }
      return TopicValidatorResult.Ignore
    } catch (err) {
      this.reject(peer, err as Error, message.data)
      return TopicValidatorResult.Reject
    }
  }

  private reject (peer: PeerId, error: Error, bytes: Uint8Array): void {
    const reason = error.name
    this.rejections?.increment({ [reason]: true })
    const key = `${peer.toString()}/${reason}/${createHash('sha256').update(bytes).digest('base64')}`
    if (this.rejected.has(key)) {
      return
    }
    if (this.rejected.size >= MAX_REMEMBERED_REJECTIONS) {
      const oldest = this.rejected.values().next().value
      if (oldest != null) {
        this.rejected.delete(oldest)
      }
    }
    this.rejected.add(key)
    log('rejected a message from %p: %s - %s', peer, reason, error.message)
    this.events.safeDispatchEvent('manifest:rejected', { detail: { peer, reason, error } })
  }

  private pushHeads (except?: PeerId): void {
    const subscribed = new Set(this.components.libp2p.services.pubsub.getSubscribers(this.topic).map(p => p.toString()))
    for (const other of connectedPeers(this.components.libp2p)) {
      if (except?.equals(other) === true || subscribed.has(other.toString())) {
        continue
      }
      this.exchangeHeads(other, AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(10_000)])).catch(err => {
        log.trace('head push to %p failed - %e', other, err)
      })
    }
  }

  private async gossip (manifest: SignedManifest): Promise<void> {
    await this.gossipBytes({ type: 'manifest', manifest: encodeSignedManifest(manifest) })
  }

  private async gossipBytes (message: AnnounceMessage): Promise<void> {
    try {
      await this.components.libp2p.services.pubsub.publish(this.topic, encodeAnnounce(message))
    } catch (err) {
      log('could not gossip a %s message - %e', message.type, err)
    }
  }

  async publishControl (control: SignedControl): Promise<ControlVerdict> {
    const { chain, controls, libp2p } = this.components
    const verdict = await controls.consider(control, chain.policyFor(chain.head().body.version + 1))
    if (verdict.kind === 'accepted') {
      this.events.safeDispatchEvent('control:accepted', { detail: { control, source: 'local' } })
    }
    if (verdict.kind === 'accepted' || verdict.kind === 'old') {
      await this.gossipBytes({ type: 'control', control: encodeSignedControl(control) })
      await Promise.allSettled(connectedPeers(libp2p).map(async peer => await this.exchangeHeads(peer)))
    }
    return verdict
  }

  async publish (manifest: SignedManifest): Promise<Verdict> {
    const { chain, libp2p } = this.components
    const verdict = await chain.consider(manifest)
    if (verdict.kind === 'accepted') {
      this.events.safeDispatchEvent('manifest:accepted', { detail: { manifest, source: 'local' } })
      this.accepted?.increment({ local: true })
    }
    if (verdict.kind === 'equivocation') {
      await this.announceFork(verdict.proof)
      return verdict
    }
    if (verdict.kind === 'cosigned') {
      this.events.safeDispatchEvent('manifest:cosigned', { detail: { manifest: chain.get(manifest.body.version) ?? manifest } })
    }
    if (verdict.kind !== 'accepted' && verdict.kind !== 'duplicate' && verdict.kind !== 'cosigned') {
      return verdict
    }
    // gossip the merged form: a co-signature added here travels with it
    await this.gossip(chain.get(manifest.body.version) ?? manifest)
    // direct submission: every connected peer learns our head and pulls what it lacks
    await Promise.allSettled(connectedPeers(libp2p).map(async peer => await this.exchangeHeads(peer)))
    return verdict
  }
}

/**
 * Creates manifest propagation for a node; call `start()` to join the topic and protocols.
 */
export function createManifestPropagation (components: PropagationComponents, init: PropagationInit): ManifestPropagation {
  return new Propagation(components, init)
}
