/**
 * A Chord node at any version: the ring (routing.ts), its items (store.ts), and what the
 * versions add on top — replication on r successors with anti-entropy (v2 and later), and the
 * hand-off of records that belong elsewhere. The version's wire is given as `remote`: this code
 * never names a method on the wire, so v1, v2 and v3 share it and differ only in their spec.
 */
import { BATCH_BYTES, CONFIG } from './config.ts'
import { inRange, ringId, segmentToKey } from './ring.ts'
import { Ring } from './routing.ts'
import { hostInvoke } from './client.ts'
import { batches, newer, recordSize, RecordStore, type RecordCodec } from './store.ts'
import { errorKind, named, refused, type AppObject, type ChordApi, type ChordConfig, type Found, type HostApi, type Invoke, type NodeInfo, type Rec, type RingState, type Step, type Stored, type TransformContext, type Value } from './types.ts'

/** What makes a node one Chord version. */
export interface NodeSpec {
  chord: number
  /** copies of each item: 1 (v1) or CONFIG.replicas */
  replicas: number
  /** predecessors whose ranges this node keeps records of (beyond that, records move to their owner) */
  zone: number
  /** whether the version knows deletion (tombstones) */
  tombstones: boolean
  codec: RecordCodec
  /** this version's wire, spoken through `invoke` (here: a call to a peer) */
  wire: (invoke: Invoke) => ChordApi
}

/** Store key of the ring hint: the neighbours before a restart or an upgrade. */
export const HINT_KEY = 'ring/hint'

const REHOME_LOOKUPS = 8
const QUIESCE_WAIT_MS = 1000

/**
 * The body of a TF between two versions' store layouts: every record of `from`'s layout is
 * rewritten into `to`'s, stamps kept, and the ring hint is carried so that the new version finds
 * its neighbours at once.
 */
export async function transformRecords ({ old, next }: Pick<TransformContext, 'old' | 'next'>, from: RecordCodec, to: RecordCodec): Promise<void> {
  for await (const [storeKey, value] of old.entries(from.prefix)) {
    const segment = storeKey.slice(from.prefix.length)
    const key = segmentToKey(segment)
    const rec = key == null ? undefined : from.decode(key, value)
    if (rec != null) await next.put(to.prefix + segment, to.encode(rec))
  }
  const hint = await old.get(HINT_KEY)
  if (hint !== undefined) await next.put(HINT_KEY, hint)
}

/** A running node's parts (the tests and the entries reach into them). */
export interface ChordNode {
  api: ChordApi
  ring: Ring
  records: RecordStore
  object: AppObject
}

function isHint (v: Value | undefined): v is { pred: string | null, succs: string[] } {
  if (v == null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) return false
  const h = v as { pred?: Value, succs?: Value }
  return (h.pred === null || typeof h.pred === 'string') && Array.isArray(h.succs) && h.succs.every(s => typeof s === 'string')
}

/**
 * Starts a node of the version `spec` describes: loads its records and ring hint, starts the
 * periodic jobs, and answers its wire through `methods` (the version's `serveVn`).
 */
export async function createNode (host: HostApi, spec: NodeSpec, methods: (api: ChordApi) => AppObject['methods']): Promise<ChordNode> {
  const config: ChordConfig = { ...CONFIG, replicas: spec.replicas }
  const records = new RecordStore(host.store, spec.codec)
  await records.load()
  const cache = new Map<string, ChordApi>()
  const remote = (peer: string): ChordApi => {
    let r = cache.get(peer)
    if (r == null) {
      if (cache.size > 1024) cache.clear()
      cache.set(peer, r = spec.wire(hostInvoke(host, peer)))
    }
    return r
  }

  let warmUntil = Date.now() + config.warmMs
  let hintDirty = false
  let stopping = false
  const busy = new Set<string>()

  const ring: Ring = new Ring(host, remote, {
    predecessors: spec.zone,
    config,
    onNeighbours: () => { hintDirty = true },
    onPredecessor: (grew) => {
      // a larger range may hold items we have only as stale replicas: read through for a while
      if (grew) warmUntil = Date.now() + config.warmMs
      // a new predecessor: hand it what is now its own
      // (a timer callback returns its promise: the host keeps the atomic section until it settles)
      if (!grew) host.timers.setTimeout(async () => { await task('rehome', rehome) }, 50)
    }
  })
  const hint = await host.store.get(HINT_KEY)
  if (isHint(hint)) {
    // unverified: stabilize and check-predecessor confirm or drop them within a second
    ring.setSuccs(hint.succs)
    ring.pred = hint.pred === ring.self ? null : hint.pred
    ring.preds = ring.pred != null ? [ring.pred] : []
    ring.learn([hint.pred, ...hint.succs])
    hintDirty = false
  }

  const id = ring.id
  const self = ring.self
  const warm = (): boolean => Date.now() >= warmUntil

  /** Runs a periodic job unless it is still running from the last tick (its calls may be slow). */
  async function task (name: string, fn: () => Promise<void>): Promise<void> {
    if (stopping || busy.has(name)) return
    busy.add(name)
    try {
      await fn()
    } catch (err) {
      host.log(`${name} failed: ${(err as Error)?.name}: ${(err as Error)?.message}`)
    } finally {
      busy.delete(name)
    }
  }

  async function saveHint (): Promise<void> {
    if (!hintDirty) return
    hintDirty = false
    await host.store.put(HINT_KEY, { pred: ring.pred, succs: [...ring.succs] })
  }

  function notResponsible (key: string): Error {
    return named('NotResponsibleError', `${self} does not hold ${ringId(key)} (its range starts at ${ring.pred ?? 'nothing'})`)
  }

  /** The newest copy among the first successors (the old owner, or the replicas). */
  async function readThrough (key: string, mine: Rec | null): Promise<Rec | null> {
    const peers = ring.liveSuccs().slice(0, Math.max(1, spec.replicas - 1))
    const answers = await Promise.allSettled(peers.map(async p => await remote(p).peek(key)))
    let best = mine
    for (const a of answers) {
      if (a.status === 'fulfilled' && a.value != null && newer(a.value, best)) best = a.value
    }
    if (best != null && best !== mine) {
      // read repair: the newest copy is stored where it belongs
      if (!spec.tombstones && best.v === null) return mine
      await records.merge(best)
    }
    return records.get(key) ?? best
  }

  /** Copies to the first r-1 successors; a version that cannot hold copies refuses (counted as none). */
  async function replicateOut (recs: Rec[]): Promise<number> {
    if (spec.replicas <= 1) return 0
    const targets = ring.liveSuccs().slice(0, spec.replicas - 1)
    const results = await Promise.allSettled(targets.map(async p => {
      try {
        await remote(p).replicate(recs)
      } catch (err) {
        ring.failed(p, err)
        throw err
      }
    }))
    return results.filter(r => r.status === 'fulfilled').length
  }

  const api: ChordApi = {
    async info (): Promise<NodeInfo> {
      const p = ring.pred
      const primary = p != null ? records.count(ringId(p), id) : records.size
      return {
        class: 'chord-node',
        chord: spec.chord,
        peer: self,
        id,
        pred: ring.pred,
        succs: [...ring.succs],
        preds: [...ring.preds],
        fingers: ring.distinctFingers(),
        keys: records.size - records.tombstones,
        tombstones: records.tombstones,
        primary,
        warm: warm(),
        r: spec.replicas
      }
    },
    async config () { return { ...config } },
    async ping () {},
    async state (): Promise<RingState> { return ring.state() },
    async notify (peer: string): Promise<boolean> { return ring.notify(peer) },
    async step (target: string, avoid: string[]): Promise<Step> { return ring.step(target, new Set(avoid)) },
    async lookup (target: string, avoid: string[]): Promise<Found> { return await ring.lookup(target, avoid) },
    async get (key: string): Promise<Rec | null> {
      if (!ring.owns(ringId(key))) throw notResponsible(key)
      const mine = records.get(key) ?? null
      if (mine != null && warm()) return mine
      return await readThrough(key, mine)
    },
    async peek (key: string): Promise<Rec | null> {
      return records.get(key) ?? null
    },
    async put (rec: Rec): Promise<Stored> {
      if (rec.v === null && !spec.tombstones) throw refused(`Chord v${spec.chord} has no deletion`)
      if (!ring.owns(ringId(rec.key))) throw notResponsible(rec.key)
      // The primary's durable write and the copies go out together (a put costs the slower of
      // the two, not their sum); the acknowledgement waits for both, so it never runs ahead of
      // the primary's copy. A copy of a write the primary then fails to store is harmless: the
      // client retries, and every merge keeps the newest stamp.
      const [, replicas] = await Promise.all([records.merge(rec), replicateOut([rec])])
      const copies = 1 + replicas
      const cur = records.get(rec.key) ?? rec
      return { t: cur.t, w: cur.w, copies }
    },
    async take (recs: Rec[]): Promise<string[]> {
      const refusedKeys: string[] = []
      for (const rec of recs) {
        if (rec.v === null && !spec.tombstones) {
          refusedKeys.push(rec.key)
          continue
        }
        await records.merge(rec)
      }
      return refusedKeys
    },
    async replicate (recs: Rec[]): Promise<void> {
      if (spec.replicas <= 1) throw refused(`Chord v${spec.chord} keeps no copies for others`)
      for (const rec of recs) await records.merge(rec)
    },
    async digest (lo: string, hi: string, suffix: string, sums: number[]): Promise<number[]> {
      if (spec.replicas <= 1) throw refused(`Chord v${spec.chord} keeps no copies for others`)
      const mine = records.digest(lo, hi, suffix)
      const differ: number[] = []
      for (let c = 0; c < 16; c++) {
        if (mine[c * 2] !== sums[c * 2] || mine[c * 2 + 1] !== sums[c * 2 + 1]) differ.push(c)
      }
      return differ
    },
    async exchange (lo: string, hi: string, suffix: string, recs: Rec[]): Promise<Rec[]> {
      if (spec.replicas <= 1) throw refused(`Chord v${spec.chord} keeps no copies for others`)
      const theirs = new Map<string, Rec>()
      for (const rec of recs) {
        theirs.set(rec.key, rec)
        await records.merge(rec)
      }
      const back: Rec[] = []
      let size = 0
      for (const rec of records.range(lo, hi, suffix)) {
        if (!newer(rec, theirs.get(rec.key))) continue
        size += recordSize(rec)
        if (size > BATCH_BYTES && back.length > 0) break
        back.push(rec)
      }
      return back
    },
    async dump (after: string | null, limit: number): Promise<Rec[]> {
      return records.page(after, Math.max(1, Math.min(limit, 500)))
    }
  }

  // --- periodic work ------------------------------------------------------------------------------

  /**
   * Records outside this node's zone (its range, plus its predecessors' when it is one of their
   * replicas) go to the node responsible for them, and are forgotten here only once it acked,
   * and only if no newer write came meanwhile. This is the key hand-off: a new predecessor gets
   * its range, a restarted node gets back what was written at its successor while it was away,
   * and after two rings merge every record finds its owner; arrivals merge by stamp.
   */
  async function rehome (): Promise<void> {
    if (ring.preds.length < spec.zone) return
    const zoneStart = ringId(ring.preds[spec.zone - 1]!)
    const out: Array<{ rec: Rec, id: string }> = []
    for (const e of records.entries()) if (!inRange(zoneStart, e.id, id)) out.push(e)
    if (out.length === 0) return
    out.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    const groups: Array<{ from: string, node: string, recs: Rec[] }> = []
    const mine: Array<[string, string]> = []
    let lookups = 0
    for (const e of out) {
      if (mine.some(([from, node]) => inRange(ringId(from), e.id, ringId(node)))) continue
      let g = groups.find(x => inRange(ringId(x.from), e.id, ringId(x.node)))
      if (g == null) {
        if (lookups++ >= REHOME_LOOKUPS) continue
        let found: Found
        try {
          found = await ring.lookup(e.id)
        } catch {
          continue
        }
        if (found.node === self) {
          mine.push([found.from, found.node])
          continue
        }
        g = { from: found.from, node: found.node, recs: [] }
        groups.push(g)
      }
      g.recs.push(e.rec)
    }
    for (const g of groups) {
      for (const batch of batches(g.recs, BATCH_BYTES)) {
        let refusedKeys: string[]
        try {
          refusedKeys = await remote(g.node).take(batch)
          ring.ok(g.node)
        } catch (err) {
          ring.failed(g.node, err)
          break
        }
        const kept = new Set(refusedKeys)
        for (const rec of batch) if (!kept.has(rec.key)) await records.removeIf(rec)
      }
    }
  }

  /** Anti-entropy of (lo, hi] with one replica, bucket by bucket (ids ending in `suffix`). */
  async function syncWith (peer: string, lo: string, hi: string, suffix: string): Promise<void> {
    let differ: number[]
    try {
      differ = await remote(peer).digest(lo, hi, suffix, records.digest(lo, hi, suffix))
      ring.ok(peer)
    } catch (err) {
      // a version that holds no copies refuses: it is not a replica until it upgrades
      if (errorKind(err) !== 'SimulationRefusedError') ring.failed(peer, err)
      return
    }
    for (const c of differ) {
      const sub = c.toString(16) + suffix
      const recs = records.range(lo, hi, sub)
      let size = 0
      for (const r of recs) size += recordSize(r)
      if (size > BATCH_BYTES && sub.length < 6) {
        await syncWith(peer, lo, hi, sub)
        continue
      }
      let back: Rec[]
      try {
        back = await remote(peer).exchange(lo, hi, sub, recs)
      } catch (err) {
        ring.failed(peer, err)
        return
      }
      for (const rec of back) await records.merge(rec)
    }
  }

  /** The primary's range, kept equal on its r-1 successors (both ways: newer copies come back). */
  async function sync (): Promise<void> {
    if (spec.replicas <= 1) return
    const p = ring.pred
    if (p == null) return
    const targets = ring.liveSuccs().slice(0, spec.replicas - 1)
    for (const t of targets) {
      if (ring.pred !== p) return
      await syncWith(t, ringId(p), id, '')
    }
  }

  const every = (ms: number, name: string, fn: () => Promise<void>): void => {
    host.timers.setInterval(async () => { await task(name, fn) }, ms)
  }
  every(config.stabilizeMs, 'stabilize', async () => {
    await ring.stabilize()
    // alone: look for a ring at every tick, not only every rejoin period
    if (ring.succ() === self) await task('rejoin', async () => { await ring.rejoin() })
    await saveHint()
  })
  every(config.checkPredecessorMs, 'check-predecessor', async () => { await ring.checkPredecessor() })
  every(config.fixFingersMs, 'fix-fingers', async () => { await ring.fixFingers() })
  every(config.rejoinMs, 'rejoin', async () => { await ring.rejoin() })
  every(config.rehomeMs, 'rehome', rehome)
  if (spec.replicas > 1) every(config.syncMs, 'sync', sync)
  host.timers.setTimeout(async () => { await task('rejoin', async () => { await ring.rejoin() }) }, 0)

  const object: AppObject = {
    methods: methods(api),
    quiesce: async (signal: AbortSignal) => {
      stopping = true
      // jobs cut half-way are safe (a record is forgotten only after its new owner acked), but
      // letting a running hand-off finish saves repeating it; never for long, since a quiesce
      // that reaches its deadline postpones the upgrade
      const until = Date.now() + QUIESCE_WAIT_MS
      while (busy.size > 0 && !signal.aborted && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 10))
    },
    stop: () => { stopping = true },
    health: () => ({ ok: true }),
    observers: {
      info: async () => await api.info() as unknown as Value
    }
  }
  return { api, ring, records, object }
}
