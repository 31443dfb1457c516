/**
 * Chord's ring maintenance (Stoica et al., SIGCOMM'01, fig. 6–7) with a successor list, an
 * iterative lookup, and a periodic rejoin through a random contact, which is what merges two
 * rings that formed apart (a partition that healed, two groups started separately).
 *
 * All of it is soft state: after a restart or an upgrade the ring is found again from a hint
 * (the last successors and predecessor, persisted when they change) and from the contacts the
 * host reports. Every timer callback is its own atomic section, but no section is held across a
 * remote call: after each `await` the code re-reads what it depends on.
 */
import { between, distance, fingerStart, ID_BITS, inRange, ringId } from './ring.ts'
import { FINGER_LOOKUPS, MAX_HOPS, MAX_SUSPECT_MS, SUSPECT_MS } from './config.ts'
import { errorKind, named, Suspects, type ChordApi, type ChordConfig, type Found, type HostApi, type RingState, type Step } from './types.ts'

/** Order-keeping dedupe. */
export function unique (list: Array<string | null | undefined>): string[] {
  const seen = new Set<string>()
  const out: string[] = []
  for (const x of list) {
    if (x != null && !seen.has(x)) {
      seen.add(x)
      out.push(x)
    }
  }
  return out
}

const MAX_MEMBERS = 512
const OTHER_MS = 30_000
const FINGER_REFRESH_MS = 10_000

/** What a {@link Ring} is told by the node that owns it. */
export interface RingOptions {
  /** how many predecessors to learn (the zone a node keeps records of) */
  predecessors: number
  config: ChordConfig
  /** the predecessor changed; `grew`: the node's range is now larger than it was */
  onPredecessor?: (grew: boolean) => void
  /** successors or predecessor changed: worth persisting as a hint */
  onNeighbours?: () => void
}

/** One node's view of the ring: successors, predecessors, fingers and known members. */
export class Ring {
  readonly self: string
  readonly id: string
  succs: string[] = []
  pred: string | null = null
  preds: string[] = []
  readonly fingers: Array<string | null> = new Array<string | null>(ID_BITS).fill(null)
  private readonly fingerAt = new Array<number>(ID_BITS).fill(0)
  private nextFinger = 0
  private readonly suspects = new Suspects(SUSPECT_MS, MAX_SUSPECT_MS)
  /** peers known to be chord nodes (or known not to be, for a while) */
  readonly members = new Map<string, { node: boolean, at: number }>()

  private readonly host: HostApi
  private readonly remote: (peer: string) => ChordApi
  private readonly options: RingOptions

  constructor (
    host: HostApi,
    remote: (peer: string) => ChordApi,
    options: RingOptions
  ) {
    this.host = host
    this.remote = remote
    this.options = options
    this.self = host.self.peerId
    this.id = ringId(this.self)
  }

  // --- liveness ---------------------------------------------------------------------------------

  suspect (peer: string): boolean {
    return this.suspects.has(peer)
  }

  /**
   * A call to `peer` failed: an unreachable peer is avoided for a while (longer each time, and
   * forgotten as a member after a few times). True if it is now suspect.
   */
  failed (peer: string, err: unknown): boolean {
    const suspect = this.suspects.failed(peer, err)
    if (suspect && this.suspects.failures(peer) >= 4) this.members.delete(peer)
    return suspect
  }

  ok (peer: string): void {
    this.suspects.ok(peer)
  }

  /** Ring references seen in replies: every one of them is a chord node. */
  learn (peers: Array<string | null | undefined>): void {
    const now = Date.now()
    for (const p of peers) {
      if (p == null || p === this.self) continue
      const m = this.members.get(p)
      if (m?.node === true) continue
      if (this.members.size >= MAX_MEMBERS) {
        const oldest = this.members.keys().next().value
        if (oldest != null) this.members.delete(oldest)
      }
      this.members.set(p, { node: true, at: now })
    }
  }

  // --- neighbourhood ----------------------------------------------------------------------------

  /** The first successor believed alive, else this node. */
  succ (avoid?: ReadonlySet<string>): string {
    for (const s of this.succs) if (!this.suspect(s) && avoid?.has(s) !== true) return s
    return this.self
  }

  liveSuccs (avoid?: ReadonlySet<string>): string[] {
    return this.succs.filter(s => !this.suspect(s) && avoid?.has(s) !== true)
  }

  setSuccs (list: Array<string | null | undefined>): void {
    const next = unique(list.filter(p => p !== this.self)).slice(0, this.options.config.successors)
    if (next.join() !== this.succs.join()) {
      this.succs = next
      this.options.onNeighbours?.()
    }
  }

  setPred (p: string | null): void {
    if (p === this.pred) return
    const old = this.pred
    // the range is (pred, self]: it grows when the predecessor moves back or is lost
    const grew = p == null || (old != null && !between(ringId(old), ringId(p), this.id))
    this.pred = p
    this.preds = p == null ? [] : [p]
    this.options.onNeighbours?.()
    this.options.onPredecessor?.(grew)
  }

  /** Is the key (by id) in this node's range (pred, self]? Without a live predecessor, yes. */
  owns (id: string): boolean {
    const p = this.pred
    if (p == null || this.suspect(p)) return true
    return inRange(ringId(p), id, this.id)
  }

  state (): RingState {
    return { pred: this.pred, succs: [...this.succs], preds: [...this.preds] }
  }

  distinctFingers (): string[] {
    return unique(this.fingers)
  }

  // --- lookup -----------------------------------------------------------------------------------

  /** The known node closest before `id`, or undefined when none is. */
  private closestPreceding (id: string, avoid: ReadonlySet<string>): string | undefined {
    let best: string | undefined
    let bestDistance = -1n
    const consider = (c: string | null): void => {
      if (c == null || c === this.self || avoid.has(c) || this.suspect(c)) return
      const cid = ringId(c)
      if (!between(this.id, cid, id)) return
      const d = distance(this.id, cid)
      if (d > bestDistance) {
        best = c
        bestDistance = d
      }
    }
    for (const f of this.fingers) consider(f)
    for (const s of this.succs) consider(s)
    for (const p of this.preds) consider(p)
    for (const [m, info] of this.members) if (info.node) consider(m)
    return best
  }

  /** One lookup step, answered from this node's tables alone. */
  step (id: string, avoid: ReadonlySet<string>): Step {
    const live = this.liveSuccs(avoid)
    const s = live[0]
    if (s == null) return { done: true, node: this.self, next: [], from: this.pred ?? this.self }
    if (inRange(this.id, id, ringId(s))) return { done: true, node: s, next: live.slice(1), from: this.self }
    const c = this.closestPreceding(id, avoid)
    if (c == null) return { done: true, node: s, next: live.slice(1), from: this.self }
    return { done: false, node: c }
  }

  /** Iterative lookup of the node responsible for `id`, starting here. */
  async lookup (id: string, avoidList: string[] = []): Promise<Found> {
    const avoid = new Set(avoidList)
    const path: string[] = []
    let cur = this.self
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      let st: Step
      if (cur === this.self) {
        st = this.step(id, avoid)
      } else {
        try {
          st = await this.remote(cur).step(id, [...avoid])
          this.ok(cur)
        } catch (err) {
          this.failed(cur, err)
          avoid.add(cur)
          cur = path.pop() ?? this.self
          continue
        }
      }
      if (st.done) {
        this.learn([st.node, ...st.next])
        return { node: st.node, succs: st.next, from: st.from }
      }
      if (st.node === cur || path.includes(st.node)) {
        // no progress: that node's tables are behind; go round it
        avoid.add(st.node)
        continue
      }
      this.learn([st.node])
      path.push(cur)
      cur = st.node
    }
    throw named('LookupFailedError', `no answer for ${id} within ${MAX_HOPS} hops`)
  }

  // --- maintenance ------------------------------------------------------------------------------

  /** A known node between us and our successor, closest to us. */
  private closerMember (s: string): string | undefined {
    const sid = ringId(s)
    let best: string | undefined
    let bestDistance: bigint | undefined
    for (const [m, info] of this.members) {
      if (!info.node || m === this.self || this.suspect(m)) continue
      const mid = ringId(m)
      if (s !== this.self && !between(this.id, mid, sid)) continue
      const d = distance(this.id, mid)
      if (bestDistance == null || d < bestDistance) {
        best = m
        bestDistance = d
      }
    }
    return best
  }

  /** Checks our successor, adopts a closer one, and tells it about us. */
  async stabilize (): Promise<void> {
    let s = this.succ()
    const closer = this.closerMember(s)
    if (closer != null) {
      this.setSuccs([closer, ...this.succs])
      s = closer
    }
    if (s === this.self) {
      const p = this.pred
      if (p == null || this.suspect(p)) return
      // alone but someone notified us: a ring of two
      this.setSuccs([p])
      s = p
    }
    let st: RingState
    try {
      st = await this.remote(s).state()
      this.ok(s)
    } catch (err) {
      if (this.failed(s, err)) this.setSuccs(this.succs.filter(x => x !== s))
      return
    }
    if (this.succ() !== s) return
    this.learn([st.pred, ...st.succs, ...st.preds])
    const x = st.pred
    const adopt = x != null && x !== this.self && !this.suspect(x) && between(this.id, ringId(x), ringId(s))
    this.setSuccs(adopt ? [x, s, ...st.succs] : [s, ...st.succs])
    if (adopt || st.pred !== this.self) {
      const target = adopt ? x : s
      try {
        await this.remote(target).notify(this.self)
        this.ok(target)
      } catch (err) {
        this.failed(target, err)
      }
    }
  }

  /** `peer` thinks it might be our predecessor. */
  notify (peer: string): boolean {
    if (peer === this.self) return false
    this.ok(peer)
    this.learn([peer])
    const p = this.pred
    if (p == null || this.suspect(p) || between(ringId(p), ringId(peer), this.id)) this.setPred(peer)
    if (this.succ() === this.self) this.setSuccs([peer])
    return this.pred === peer
  }

  /** Is the predecessor alive? Also learns its predecessors (the zone of replicas). */
  async checkPredecessor (): Promise<void> {
    const p = this.pred
    if (p == null) return
    let st: RingState
    try {
      st = await this.remote(p).state()
      this.ok(p)
    } catch (err) {
      if (this.failed(p, err) && this.pred === p) this.setPred(null)
      return
    }
    if (this.pred !== p) return
    this.learn([st.pred, ...st.preds, ...st.succs])
    const chain: string[] = [p]
    for (const q of st.preds) {
      if (q === this.self || chain.includes(q)) break
      chain.push(q)
    }
    this.preds = chain.slice(0, this.options.predecessors)
  }

  /** Refreshes a few fingers whose start lies beyond the successor (the others are the successor). */
  async fixFingers (): Promise<void> {
    const ranges: Array<[string, string]> = []
    let lookups = 0
    for (let n = 0; n < ID_BITS && lookups < FINGER_LOOKUPS; n++) {
      const i = this.nextFinger
      this.nextFinger = (i + 1) % ID_BITS
      const start = fingerStart(this.id, i)
      const s = this.succ()
      if (s === this.self) {
        this.fingers[i] = null
        continue
      }
      if (inRange(this.id, start, ringId(s))) {
        this.fingers[i] = s
        continue
      }
      const hit = ranges.find(([from, node]) => inRange(ringId(from), start, ringId(node)))
      if (hit != null) {
        this.fingers[i] = hit[1]
        continue
      }
      const f = this.fingers[i]
      if (f != null && !this.suspect(f) && Date.now() - this.fingerAt[i]! < FINGER_REFRESH_MS) continue
      lookups++
      try {
        const found = await this.lookup(start)
        this.fingers[i] = found.node
        this.fingerAt[i] = Date.now()
        ranges.push([found.from, found.node])
      } catch {
        // the next round tries again
      }
    }
  }

  /** Is `peer` a chord node? Asks it once (a no is remembered for a while). */
  async probe (peer: string): Promise<boolean> {
    const m = this.members.get(peer)
    if (m != null && (m.node || Date.now() - m.at < OTHER_MS)) return m.node
    try {
      const info = await this.remote(peer).info()
      this.ok(peer)
      const node = info.class === 'chord-node'
      this.members.set(peer, { node, at: Date.now() })
      return node
    } catch (err) {
      const kind = errorKind(err)
      if (!this.failed(peer, err) && kind !== 'UpgradingError' && kind !== 'CallTimeoutError') this.members.set(peer, { node: false, at: Date.now() })
      return false
    }
  }

  /** Contacts worth asking: connected peers first, then known nodes. */
  private contacts (): string[] {
    const now = Date.now()
    const out = new Set<string>()
    for (const p of this.host.peers()) {
      const m = this.members.get(p)
      if (p !== this.self && !this.suspect(p) && (m == null || m.node || now - m.at >= OTHER_MS)) out.add(p)
    }
    for (const [p, m] of this.members) if (m.node && !this.suspect(p)) out.add(p)
    return [...out]
  }

  /** Probes connected peers not known yet (so that the successor shortcut sees them). */
  async discover (max = 4): Promise<void> {
    const unknown = this.host.peers().filter(p => p !== this.self && !this.members.has(p) && !this.suspect(p)).slice(0, max)
    await Promise.all(unknown.map(async p => await this.probe(p)))
  }

  /**
   * Asks a random contact for the successor of our own id, and adopts it if it is closer than
   * ours. Two rings that can reach each other merge this way: each node finds its place in the
   * other ring, and stabilize interleaves the two.
   */
  async rejoin (): Promise<void> {
    await this.discover()
    const contacts = this.contacts()
    if (contacts.length === 0) return
    const c = contacts[Math.floor(Math.random() * contacts.length)]!
    if (!(await this.probe(c))) return
    let found: Found
    try {
      found = await this.remote(c).lookup(this.id, [])
      this.ok(c)
    } catch (err) {
      this.failed(c, err)
      return
    }
    this.learn([found.node, ...found.succs])
    const s = found.node
    if (s === this.self || this.suspect(s)) return
    const cur = this.succ()
    if (cur === this.self || between(this.id, ringId(s), ringId(cur))) {
      this.setSuccs([s, ...found.succs, ...this.succs])
    }
  }
}
