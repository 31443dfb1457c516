/**
 * The networked fleet view (decision 10): signed status records on per-group gossipsub topics,
 * direct pulls of the few other peers a node counts, version labels from call replies, last writer
 * by sequence number, expiry of silent peers, bounded memory.
 *
 * A node subscribes to the topic of its own replica group (and of any group it is told to watch),
 * so it receives the records of that group only. The records of its servers, of the roster and of
 * the peers it called are pulled directly once per announce period. Per-node cost is O(k), k the
 * records its schedules count, whatever the size of the fleet (docs/schedule.md).
 *
 * @packageDocumentation
 */
import { createHash } from 'node:crypto'
import { TopicValidatorResult, type Message } from '@libp2p/gossipsub'
import { logger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import { TypedEventEmitter } from 'main-event'
import { InvalidOptionError } from '../overlay/errors.ts'
import { createRequestSessions, protocolId, validateSystemName, type MoltLibp2p, type RequestSessions } from '../overlay/index.ts'
import { StaleStatusError } from './errors.ts'
import { decodeSignedStatus, encodeSignedStatus, MAX_STATUS_BYTES, signStatus, type SignedStatus } from './record.ts'
import { NO_CONTROL, type ControlState, type Deferral, type FleetView, type PeerStatus, type Phase, type StatusRecord } from './types.ts'
import type { VersionSeen } from '../layer/index.ts'
import type { CounterGroup, PeerId, PrivateKey, Startable } from '@libp2p/interface'

const log = logger('molt:schedule')

/** A group name is part of a topic: keep it to a safe alphabet. */
const GROUP_NAME = /^[A-Za-z0-9._-]{1,64}$/

/**
 * The gossipsub topic of one replica group's status records.
 */
export function statusTopic (system: string, group: string): string {
  return `/molt/${system}/status/${group}/1`
}

/**
 * Events of a fleet view.
 */
export interface FleetViewEvents {
  /** a counted peer's status changed (a newer record, a label, or it expired) */
  'status:changed': CustomEvent<{ peer: string, status?: PeerStatus }>
  /** a record was refused (bad signature, malformed, oversize, replay); nothing changed */
  'status:rejected': CustomEvent<{ peer: string, reason: string, error: Error }>
  /** this node published a new record of its own */
  'status:published': CustomEvent<StatusRecord>
}

/**
 * What the fleet view needs of the node.
 */
export interface FleetViewComponents {
  libp2p: MoltLibp2p
  /** the node's key, which signs its status records (its libp2p identity) */
  privateKey: PrivateKey
}

/**
 * Options of {@link createFleetView}.
 */
export interface FleetViewInit {
  /** the system's name */
  system: string
  /** this node's class */
  class: string
  /**
   * This node's version.
   *
   * @default 0
   */
  version?: number
  /**
   * App tags; `group` names the replica group whose topic the node joins.
   *
   * @default {}
   */
  tags?: Record<string, string>
  /**
   * Peers the node counts as its replicas (peer id strings).
   *
   * @default []
   */
  replicas?: string[]
  /**
   * Peers the node counts as its servers.
   *
   * @default []
   */
  servers?: string[]
  /**
   * The upgrader's roster or allow-list.
   *
   * @default []
   */
  roster?: string[]
  /**
   * Further groups whose topics the node joins (e.g. a client watching its servers' group).
   *
   * @default []
   */
  watchGroups?: string[]
  /**
   * Period of the re-announce of this node's record and of the pulls of counted peers outside its
   * groups.
   *
   * @default 30000
   */
  announceMs?: number
  /**
   * A counted peer not heard of for this long drops out of the view.
   *
   * @default 3 × announceMs
   */
  expiryMs?: number
  /**
   * Most peers the view holds; the least recently heard is evicted first.
   *
   * @default 1024
   */
  maxPeers?: number
  /**
   * Most peers this node has called that it keeps counting (a sample of the fleet).
   *
   * @default 16
   */
  maxCalled?: number
  /**
   * The sequence number of the first record this node makes. It must grow across restarts:
   * the default, the clock in milliseconds, does as long as the clock does.
   *
   * @default Date.now()
   */
  initialSeq?: number
  /**
   * Clock, in milliseconds.
   *
   * @default Date.now
   */
  now?: () => number
}

/**
 * The fields of its own record a node sets.
 */
export type StatusUpdate = Partial<Pick<StatusRecord, 'class' | 'version' | 'target' | 'phase' | 'healthy' | 'tags'>> & {
  /** the intent acknowledged, or null to withdraw the acknowledgement */
  defer?: Deferral | null
}

/**
 * A node's networked fleet view. Its {@link FleetView} methods are what SFs see.
 */
export interface NetworkFleetView extends FleetView, Startable {
  readonly events: TypedEventEmitter<FleetViewEvents>
  /** this node's latest record */
  own(): StatusRecord
  /** the sequence number of the record that announced the current intent, and when */
  intent(): { seq: number, at: number } | undefined
  /**
   * Changes this node's record: bumps the sequence number, signs and publishes it at once (the
   * periodic re-announce goes on as well).
   */
  update(patch: StatusUpdate): Promise<StatusRecord>
  /** Replaces the peers this node counts. */
  setCounted(counted: { replicas?: string[], servers?: string[], roster?: string[] }): void
  /** The replicas, servers and roster as last set. */
  counted(): { replicas: string[], servers: string[], roster: string[] }
  /** Sets the control state (from the upgrader's control messages). */
  setControl(control: ControlState): void
  /**
   * Feeds a version label seen on a call (decision 6). Reply labels make the peer a counted
   * server-seen-in-calls; request labels only refresh peers already counted.
   */
  observe(seen: Pick<VersionSeen, 'peer' | 'version' | 'class' | 'source'>): void
  /** Asks a peer for its current record directly; resolves with it once verified. */
  pull(peer: string, signal?: AbortSignal): Promise<StatusRecord | undefined>
  /** How many bytes of status traffic this node has sent and received (payloads). */
  traffic(): { sent: number, received: number, since: number }
  /** every live entry of the view */
  entries(): PeerStatus[]
}

interface Entry {
  status: PeerStatus
  expires: number
}

const MAX_REMEMBERED_REJECTIONS = 4096

class NetworkView implements NetworkFleetView {
  readonly events = new TypedEventEmitter<FleetViewEvents>()
  private readonly system: string
  private readonly protocol: string
  private readonly announceMs: number
  private readonly expiryMs: number
  private readonly maxPeers: number
  private readonly maxCalled: number
  private readonly now: () => number
  private record: StatusRecord
  private signed?: SignedStatus
  private intentOf?: { seq: number, at: number }
  private replicas = new Set<string>()
  private servers = new Set<string>()
  private roster = new Set<string>()
  private readonly called = new Map<string, number>()
  private readonly entriesByPeer = new Map<string, Entry>()
  private readonly topics = new Set<string>()
  private readonly watch: string[]
  private readonly rejected = new Set<string>()
  private readonly rejections?: CounterGroup
  private controlState: ControlState = NO_CONTROL
  private timer?: ReturnType<typeof setInterval>
  private readonly pulls: RequestSessions
  private shutdown = new AbortController()
  private started = false
  private publishing: Promise<void> = Promise.resolve()
  private sent = 0
  private received = 0
  private trafficSince: number

  private readonly components: FleetViewComponents

  constructor (components: FleetViewComponents, init: FleetViewInit) {
    this.components = components
    this.system = validateSystemName(init.system)
    // 2.0.0: pulls ride on request sessions (one stream per peer), not a stream per pull
    this.protocol = protocolId(this.system, 'status', '2.0.0')
    this.announceMs = init.announceMs ?? 30_000
    this.expiryMs = init.expiryMs ?? 3 * this.announceMs
    this.maxPeers = init.maxPeers ?? 1024
    this.maxCalled = init.maxCalled ?? 16
    this.now = init.now ?? Date.now
    if (!(this.announceMs > 0) || !(this.expiryMs > 0) || !(this.maxPeers > 0)) {
      throw new InvalidOptionError('announceMs, expiryMs and maxPeers must be > 0')
    }
    const tags = { ...(init.tags ?? {}) }
    this.watch = [...(init.watchGroups ?? [])]
    for (const g of [tags.group, ...this.watch]) {
      if (g != null && !GROUP_NAME.test(g)) throw new InvalidOptionError(`group: "${g}" must be 1-64 characters of A-Z, a-z, 0-9, ".", "_" or "-"`)
    }
    const version = init.version ?? 0
    this.record = {
      peer: components.libp2p.peerId.toString(),
      class: init.class,
      version,
      target: version,
      phase: 'running',
      healthy: true,
      tags,
      seq: Math.max(1, Math.floor(init.initialSeq ?? this.now())),
      at: Math.floor(this.now())
    }
    this.setCounted({ replicas: init.replicas ?? [], servers: init.servers ?? [], roster: init.roster ?? [] })
    this.trafficSince = this.now()
    this.pulls = createRequestSessions(components, {
      protocol: this.protocol,
      handler: async () => {
        const signed = this.signed ?? await this.sign()
        const bytes = encodeSignedStatus(signed)
        this.sent += bytes.byteLength
        return bytes
      },
      maxRequestBytes: 16,
      maxResponseBytes: MAX_STATUS_BYTES,
      // a view pulls its counted peers once per period: keep their sessions across periods
      idleTimeoutMs: Math.max(60_000, 3 * this.announceMs)
    })
    this.rejections = components.libp2p.metrics?.registerCounterGroup('molt_status_rejections_total', {
      help: 'status records refused, by reason'
    })
  }

  readonly [Symbol.toStringTag] = 'molt:fleet-view'

  isStarted (): boolean {
    return this.started
  }

  async start (): Promise<void> {
    if (this.started) return
    this.shutdown = new AbortController()
    await this.pulls.start()
    for (const g of [this.record.tags.group, ...this.watch]) {
      if (g != null) this.join(statusTopic(this.system, g))
    }
    this.started = true
    this.timer = setInterval(() => { this.tick() }, this.announceMs)
    this.timer.unref?.()
    await this.announce()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.shutdown.abort()
    clearInterval(this.timer)
    const { libp2p } = this.components
    for (const topic of this.topics) {
      libp2p.services.pubsub.topicValidators.delete(topic)
      libp2p.services.pubsub.unsubscribe(topic)
    }
    this.topics.clear()
    await this.pulls.stop()
    await this.publishing.catch(() => {})
  }

  private join (topic: string): void {
    if (this.topics.has(topic)) return
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.topicValidators.set(topic, async (peer, message) => await this.validate(peer, message))
    pubsub.subscribe(topic)
    this.topics.add(topic)
  }

  // --- what SFs see ------------------------------------------------------------------------------

  get control (): ControlState {
    return this.controlState
  }

  get (peer: string): PeerStatus | undefined {
    if (!this.counts(peer)) return undefined
    const entry = this.entriesByPeer.get(peer)
    if (entry == null) return undefined
    if (entry.expires <= this.now()) {
      this.expire(peer)
      return undefined
    }
    return entry.status
  }

  contacts (): PeerStatus[] {
    const out: PeerStatus[] = []
    for (const peer of new Set([...this.roster, ...this.called.keys()])) {
      if (this.replicas.has(peer) || this.servers.has(peer)) continue
      const s = this.get(peer)
      if (s != null) out.push(s)
    }
    return out
  }

  entries (): PeerStatus[] {
    return [...this.entriesByPeer.keys()].map(p => this.get(p)).filter((s): s is PeerStatus => s != null)
  }

  // --- this node's record ----------------------------------------------------------------------

  own (): StatusRecord {
    return this.record
  }

  intent (): { seq: number, at: number } | undefined {
    return this.intentOf
  }

  async update (patch: StatusUpdate): Promise<StatusRecord> {
    const next: { -readonly [K in keyof StatusRecord]: StatusRecord[K] } = { ...this.record, seq: this.record.seq + 1, at: Math.floor(this.now()) }
    if (patch.class !== undefined) next.class = patch.class
    if (patch.version !== undefined) next.version = patch.version
    if (patch.target !== undefined) next.target = patch.target
    if (patch.phase !== undefined) next.phase = patch.phase
    if (patch.healthy !== undefined) next.healthy = patch.healthy
    if (patch.tags !== undefined) next.tags = { ...patch.tags }
    if (patch.defer !== undefined) {
      if (patch.defer === null) delete next.defer
      else next.defer = { peer: patch.defer.peer, seq: patch.defer.seq }
    }
    if (next.target < next.version) next.target = next.version
    const wasIntent = this.record.phase === 'intent'
    this.record = Object.freeze(next)
    if (next.phase === 'intent' && !wasIntent) this.intentOf = { seq: next.seq, at: next.at }
    if (next.phase !== 'intent') this.intentOf = undefined
    if (patch.tags?.group !== undefined && this.started && GROUP_NAME.test(patch.tags.group)) {
      this.join(statusTopic(this.system, patch.tags.group))
    }
    await this.announce(false)
    this.events.safeDispatchEvent('status:published', { detail: this.record })
    return this.record
  }

  private async sign (): Promise<SignedStatus> {
    const record = this.record
    const signed = await signStatus(this.system, record, this.components.privateKey)
    if (this.record === record) this.signed = signed
    return signed
  }

  /** Publishes the current record (a fresh sequence number when it re-announces). */
  private async announce (bump = true): Promise<void> {
    const run = async (): Promise<void> => {
      if (bump) this.record = Object.freeze({ ...this.record, seq: this.record.seq + 1, at: Math.floor(this.now()) })
      const signed = await this.sign()
      const group = this.record.tags.group
      if (!this.started || group == null) return
      const bytes = encodeSignedStatus(signed)
      try {
        await this.components.libp2p.services.pubsub.publish(statusTopic(this.system, group), bytes)
        this.sent += bytes.byteLength
      } catch (err) {
        log('could not publish status #%d - %e', signed.record.seq, err)
      }
    }
    this.publishing = this.publishing.then(run, run)
    await this.publishing
  }

  // --- counting --------------------------------------------------------------------------------

  private counts (peer: string): boolean {
    return this.replicas.has(peer) || this.servers.has(peer) || this.roster.has(peer) || this.called.has(peer)
  }

  setCounted (counted: { replicas?: string[], servers?: string[], roster?: string[] }): void {
    const self = this.record.peer
    const clean = (list: string[]): Set<string> => new Set(list.filter(p => p !== self))
    if (counted.replicas != null) this.replicas = clean(counted.replicas)
    if (counted.servers != null) this.servers = clean(counted.servers)
    if (counted.roster != null) this.roster = clean(counted.roster)
    for (const peer of this.entriesByPeer.keys()) {
      if (!this.counts(peer)) this.entriesByPeer.delete(peer)
    }
  }

  counted (): { replicas: string[], servers: string[], roster: string[] } {
    return { replicas: [...this.replicas], servers: [...this.servers], roster: [...this.roster] }
  }

  setControl (control: ControlState): void {
    this.controlState = Object.freeze({ ...control })
    this.events.safeDispatchEvent('status:changed', { detail: { peer: this.record.peer } })
  }

  observe (seen: Pick<VersionSeen, 'peer' | 'version' | 'class' | 'source'>): void {
    const peer = seen.peer.toString()
    if (peer === this.record.peer) return
    if (seen.source === 'reply' && !this.called.has(peer)) {
      if (this.called.size >= this.maxCalled) {
        // keep the most recent callees: drop the one called longest ago
        const oldest = [...this.called.entries()].sort((a, b) => a[1] - b[1])[0]
        if (oldest != null) {
          this.called.delete(oldest[0])
          if (!this.counts(oldest[0])) this.entriesByPeer.delete(oldest[0])
        }
      }
    }
    if (seen.source === 'reply') this.called.set(peer, this.now())
    if (!this.counts(peer)) return
    const entry = this.entriesByPeer.get(peer)
    const now = this.now()
    if (entry != null && entry.status.source === 'record') {
      // a label refreshes a signed record; a higher version in a label is a hint, the record
      // itself comes with the next pull
      this.entriesByPeer.set(peer, { status: { ...entry.status, heardAt: now, called: this.called.has(peer) }, expires: now + this.expiryMs })
      if (seen.version > entry.status.version) void this.pull(peer).catch(() => {})
      return
    }
    const status: PeerStatus = Object.freeze({
      peer, class: seen.class, version: seen.version, target: seen.version, phase: 'running' as Phase, healthy: true,
      tags: Object.freeze({}), seq: 0, at: Math.floor(now), source: 'label' as const, heardAt: now, called: this.called.has(peer)
    })
    this.store(peer, status)
  }

  // --- receiving -------------------------------------------------------------------------------

  private store (peer: string, status: PeerStatus): void {
    if (!this.entriesByPeer.has(peer) && this.entriesByPeer.size >= this.maxPeers) {
      let oldest: string | undefined
      let at = Infinity
      for (const [p, e] of this.entriesByPeer) {
        if (e.status.heardAt < at) { at = e.status.heardAt; oldest = p }
      }
      if (oldest != null) this.entriesByPeer.delete(oldest)
    }
    this.entriesByPeer.set(peer, { status, expires: status.heardAt + this.expiryMs })
    this.events.safeDispatchEvent('status:changed', { detail: { peer, status } })
  }

  private expire (peer: string): void {
    this.entriesByPeer.delete(peer)
    log('status of %s expired', peer)
    this.events.safeDispatchEvent('status:changed', { detail: { peer } })
  }

  /**
   * Takes a verified record: last writer by sequence number; only counted peers are kept.
   * Returns false for a stale one.
   */
  private accept (record: StatusRecord): boolean {
    const peer = record.peer
    if (peer === this.record.peer) return false
    const entry = this.entriesByPeer.get(peer)
    if (entry != null && entry.status.source === 'record' && entry.status.seq >= record.seq) {
      return false
    }
    if (!this.counts(peer)) {
      // a stranger's record is valid but counts for nothing here: not stored, not read by any SF
      return true
    }
    const now = this.now()
    this.store(peer, Object.freeze({ ...record, source: 'record' as const, heardAt: now, called: this.called.has(peer) }))
    return true
  }

  private async validate (from: PeerId, message: Message): Promise<TopicValidatorResult> {
    this.received += message.data.byteLength
    let signed: SignedStatus
    try {
      signed = await decodeSignedStatus(message.data, this.system)
    } catch (err) {
      this.reject(from.toString(), err as Error, message.data)
      return TopicValidatorResult.Reject
    }
    if (!this.accept(signed.record)) {
      return TopicValidatorResult.Ignore
    }
    return TopicValidatorResult.Accept
  }

  async pull (peer: string, signal?: AbortSignal): Promise<StatusRecord | undefined> {
    const id = peerIdFromString(peer)
    const reply = await this.pulls.request(id, new Uint8Array(0), {
      signal: signal ?? AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(10_000)])
    })
    this.received += reply.byteLength
    let signed: SignedStatus
    try {
      // a peer answers for itself only
      signed = await decodeSignedStatus(reply, this.system, { from: peer })
    } catch (err) {
      this.reject(peer, err as Error, reply)
      throw err
    }
    if (!this.accept(signed.record)) {
      const known = this.entriesByPeer.get(peer)
      if (known != null) {
        // the same record again: the peer is alive
        this.entriesByPeer.set(peer, { status: { ...known.status, heardAt: this.now() }, expires: this.now() + this.expiryMs })
      }
      return known?.status
    }
    return signed.record
  }

  private reject (peer: string, error: Error, bytes: Uint8Array): void {
    const reason = error.name
    if (error instanceof StaleStatusError) return
    this.rejections?.increment({ [reason]: true })
    const key = `${peer}/${reason}/${createHash('sha256').update(bytes).digest('base64')}`
    if (this.rejected.has(key)) return
    if (this.rejected.size >= MAX_REMEMBERED_REJECTIONS) {
      const oldest = this.rejected.values().next().value
      if (oldest != null) this.rejected.delete(oldest)
    }
    this.rejected.add(key)
    log('rejected a status record from %s: %s - %s', peer, reason, error.message)
    this.events.safeDispatchEvent('status:rejected', { detail: { peer, reason, error } })
  }

  // --- the period ------------------------------------------------------------------------------

  private tick (): void {
    if (!this.started) return
    void this.announce().catch(err => { log('re-announce failed - %e', err) })
    const now = this.now()
    for (const [peer, entry] of this.entriesByPeer) {
      if (entry.expires <= now) this.expire(peer)
    }
    // counted peers outside this node's topics, and those not heard yet, are pulled once per
    // period: nothing else refreshes their entries before they expire (replicas included: a
    // replica tagged with another group than this node's is counted all the same)
    const mine = this.record.tags.group
    for (const peer of new Set([...this.replicas, ...this.servers, ...this.roster, ...this.called.keys()])) {
      const known = this.entriesByPeer.get(peer)
      if (known?.status.tags.group != null && (known.status.tags.group === mine || this.watch.includes(known.status.tags.group))) continue
      this.pull(peer).catch(err => { log.trace('pull of %s failed - %e', peer, err) })
    }
  }

  traffic (): { sent: number, received: number, since: number } {
    return { sent: this.sent, received: this.received, since: this.trafficSince }
  }
}

/**
 * Creates a node's networked fleet view. Start it to join its group's topic, serve its record to
 * direct pulls and re-announce it every `announceMs`.
 */
export function createFleetView (components: FleetViewComponents, init: FleetViewInit): NetworkFleetView {
  return new NetworkView(components, init)
}
