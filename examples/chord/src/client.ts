/**
 * A Chord client (class `chord-client`): it routes puts, gets and deletes into the ring.
 *
 * It knows ring members by probing its connected peers with `info` and by the ring references in
 * the answers, and since a node's id is the hash of its peer id, it can guess the node
 * responsible for a key from that list alone (one call per operation once the list is complete).
 * A node outside its range answers `NotResponsibleError`; the client then asks that node for a
 * lookup. A retryable failure (`UpgradingError`, `UnavailableError`, `CallTimeoutError`) makes it
 * try another route at once — an unreachable node is avoided by the lookups that follow — and
 * after a few attempts it fails with the retryable kind, so that the caller retries with its own
 * backoff: a client never sleeps inside a call, which would hold its node's atomic section.
 * Other failures (`SimulationRefusedError`, `VersionRetiredError`, ...) are thrown under their
 * own name, so that every failed operation can be classified.
 *
 * Stamps: the client's clock, `t = max(last + 1, now)` (monotonic per client), and its peer id.
 */
import { str, value } from './check.ts'
import { CLIENT_OP_MS, CLIENT_REFRESH_MS, MAX_SUSPECT_MS, SUSPECT_MS } from './config.ts'
import { ringId, type Stamp } from './ring.ts'
import { errorKind, named, readAnswer, RETRYABLE, Suspects, UNREACHABLE, type AppObject, type ChordApi, type HostApi, type Invoke, type Method, type Rec, type SimulationContext, type Value } from './types.ts'

export { readAnswer }

const ATTEMPTS = 8
const OTHER_MS = 30_000

/** An invoke that calls `peer` through the host (labelled with the object's version). */
export function hostInvoke (host: HostApi, peer: string): Invoke {
  return async (method, args, deadlineMs) => await host.call(peer, method, args, deadlineMs != null ? { deadlineMs } : {})
}

/** An invoke that calls the object behind an SO (the host bounds the delegated call). */
export function delegateInvoke (delegate: SimulationContext['delegate']): Invoke {
  return async (method, args) => await delegate.call(method, args)
}

/** SO methods that hand each of `names` to the object behind the SO, unchanged. */
export function passThrough (delegate: SimulationContext['delegate'], names: string[]): Record<string, Method> {
  return Object.fromEntries(names.map(name => [name, async (args: Value[]) => await delegate.call(name, args)]))
}

/** The error a caller of the client sees: the same kind, without our prefixes. */
function rethrow (err: unknown): Error {
  const kind = errorKind(err)
  const e = new Error(String((err as Error)?.message ?? err))
  e.name = kind
  return e
}

/** After the attempts ran out: a failure the caller may retry, under a kind the layer calls retryable. */
function retryLater (last: unknown): Error {
  const kind = errorKind(last)
  const e = new Error(`no attempt succeeded; the last failed with ${kind}: ${String((last as Error)?.message ?? last)}`)
  e.name = kind === 'UpgradingError' || kind === 'CallTimeoutError' ? kind : 'UnavailableError'
  return e
}

export class ChordClient {
  private readonly members = new Map<string, string>()
  private sorted: Array<[string, string]> | undefined
  private readonly others = new Map<string, number>()
  private readonly suspects = new Suspects(SUSPECT_MS, MAX_SUSPECT_MS)
  private readonly apis = new Map<string, ChordApi>()
  private last = 0
  readonly self: string

  private readonly host: HostApi
  private readonly wire: (invoke: Invoke) => ChordApi

  constructor (host: HostApi, wire: (invoke: Invoke) => ChordApi) {
    this.host = host
    this.wire = wire
    this.self = host.self.peerId
  }

  /** Refreshes the member list now and then (each refresh is its own atomic section). */
  start (): void {
    const refresh = async (): Promise<void> => {
      try {
        await this.discover()
      } catch {}
    }
    this.host.timers.setTimeout(refresh, 0)
    this.host.timers.setInterval(refresh, CLIENT_REFRESH_MS)
  }

  /** The next stamp of this client. */
  stamp (): Stamp {
    const t = Math.max(this.last + 1, Date.now())
    this.last = t
    return [t, this.self]
  }

  memberList (): string[] {
    return [...this.members.keys()]
  }

  private remote (peer: string): ChordApi {
    let api = this.apis.get(peer)
    if (api == null) {
      if (this.apis.size > 1024) this.apis.clear()
      this.apis.set(peer, api = this.wire(hostInvoke(this.host, peer)))
    }
    return api
  }

  /** The peer's API for one attempt of an operation: no call outlives the operation's deadline. */
  private within (peer: string, deadline: number): ChordApi {
    return this.wire(async (method, args, deadlineMs) => {
      const left = Math.max(1, deadline - Date.now())
      return await this.host.call(peer, method, args, { deadlineMs: Math.min(deadlineMs ?? left, left) })
    })
  }

  private learn (peers: Array<string | null | undefined>): void {
    for (const p of peers) {
      if (p == null || p === this.self || this.members.has(p)) continue
      this.members.set(p, ringId(p))
      this.sorted = undefined
    }
  }

  private suspect (peer: string): boolean {
    return this.suspects.has(peer)
  }

  /** True if the peer is now suspect. */
  private failed (peer: string, err: unknown): boolean {
    const suspect = this.suspects.failed(peer, err)
    if (suspect && this.suspects.failures(peer) >= 4 && this.members.delete(peer)) {
      // gone for good, as far as we know: it comes back through discovery if it returns
      this.sorted = undefined
      this.suspects.forget(peer)
    }
    return suspect
  }

  private ok (peer: string): void {
    this.suspects.ok(peer)
  }

  /** Probes connected peers not known yet, and reads one member's neighbourhood. */
  async discover (): Promise<void> {
    const now = Date.now()
    const unknown = this.host.peers().filter(p => p !== this.self && !this.members.has(p) && now - (this.others.get(p) ?? -OTHER_MS) >= OTHER_MS).slice(0, 8)
    const known = [...this.members.keys()].filter(p => !this.suspect(p))
    const one = known[Math.floor(Math.random() * known.length)]
    const asks = unknown.map(async p => {
      try {
        const info = await this.remote(p).info()
        this.ok(p)
        this.learn([p, info.pred, ...info.succs, ...info.preds, ...info.fingers])
      } catch (err) {
        // not a chord node (a client, another class): not asked again for a while
        if (!RETRYABLE.has(errorKind(err))) this.others.set(p, Date.now())
      }
    })
    if (one != null) {
      asks.push((async () => {
        try {
          const info = await this.remote(one).info()
          this.ok(one)
          this.learn([info.pred, ...info.succs, ...info.preds, ...info.fingers])
        } catch (err) {
          this.failed(one, err)
        }
      })())
    }
    await Promise.all(asks)
  }

  /** The member that should hold `id`: the first one at or after it on the ring. */
  private guess (id: string, avoid: ReadonlySet<string>): string | undefined {
    this.sorted ??= [...this.members].map(([peer, pid]): [string, string] => [pid, peer]).sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
    const list = this.sorted
    if (list.length === 0) return undefined
    let lo = 0
    let hi = list.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (list[mid]![0] < id) lo = mid + 1
      else hi = mid
    }
    for (let i = 0; i < list.length; i++) {
      const peer = list[(lo + i) % list.length]![1]
      if (!this.suspect(peer) && !avoid.has(peer)) return peer
    }
    return undefined
  }

  private anyMember (avoid: ReadonlySet<string>): string | undefined {
    const live = [...this.members.keys()].filter(p => !this.suspect(p) && !avoid.has(p))
    return live[Math.floor(Math.random() * live.length)]
  }

  /** Runs `fn` on the node responsible for `key`, re-routing after failures that allow it. */
  async route<T> (key: string, signal: AbortSignal | undefined, fn: (api: ChordApi) => Promise<T>): Promise<T> {
    const id = ringId(key)
    const deadline = Date.now() + CLIENT_OP_MS
    const avoid = new Set<string>()
    if (this.members.size === 0) await this.discover()
    let target = this.guess(id, avoid)
    let via: string | undefined
    let last: unknown = named('UnavailableError', 'no chord node is known yet')
    for (let attempt = 0; attempt < ATTEMPTS && signal?.aborted !== true && Date.now() < deadline; attempt++) {
      if (target == null) {
        via ??= this.anyMember(avoid)
        if (via == null) {
          await this.discover()
          via = this.anyMember(avoid)
          if (via == null) break
        }
        try {
          const found = await this.within(via, deadline).lookup(id, [...avoid].slice(0, 16))
          this.ok(via)
          this.learn([found.node, ...found.succs])
          target = found.node
        } catch (err) {
          // whatever failed there says nothing about the key: route through another member
          last = err
          this.failed(via, err)
          avoid.add(via)
          via = undefined
          continue
        }
      }
      try {
        const value = await fn(this.within(target, deadline))
        this.ok(target)
        return value
      } catch (err) {
        last = err
        const kind = errorKind(err)
        if (kind === 'NotResponsibleError') {
          // the ring moved: the node that said no knows its neighbourhood best
          via = target
          target = undefined
          continue
        }
        if (!RETRYABLE.has(kind)) throw rethrow(err)
        // this operation goes round a node that did not answer; others avoid it once it is suspect
        if (UNREACHABLE.has(kind)) avoid.add(target)
        this.failed(target, err)
        via = undefined
        target = undefined
      }
    }
    throw retryLater(last)
  }

  async put (key: string, value: Value, signal?: AbortSignal, stamp?: Stamp): Promise<Stamp> {
    const [t, w] = stamp ?? this.stamp()
    await this.route(key, signal, async api => await api.put({ key, t, w, v: value }))
    return [t, w]
  }

  async get (key: string, signal?: AbortSignal): Promise<Rec | null> {
    return await this.route(key, signal, async api => await api.get(key))
  }

  async remove (key: string, signal?: AbortSignal, stamp?: Stamp): Promise<Stamp> {
    const [t, w] = stamp ?? this.stamp()
    await this.route(key, signal, async api => await api.put({ key, t, w, v: null }))
    return [t, w]
  }
}

/** What makes a client object one version. */
export interface ClientSpec {
  /** the client version, as `info` reports it */
  chord: number
  /** the node wire it routes over */
  wire: (invoke: Invoke) => ChordApi
  /** whether it offers `delete` (client v2 and later) */
  deletes: boolean
}

/**
 * The object of a client version: `put([key, value])` → `{ stamp }`, `get([key])` →
 * `{ value, stamp } | null`, `delete([key])` → `{ stamp }` when the version has it, and `stamp`
 * and `info`. The versions differ only in the wire they route over.
 */
export function createClientObject (host: HostApi, spec: ClientSpec): AppObject {
  const client = new ChordClient(host, spec.wire)
  client.start()
  const remove: Method = async ([key], ctx) => ({ stamp: await client.remove(str(key, 'key'), ctx.signal) })
  return {
    methods: {
      put: async ([key, v], ctx) => ({ stamp: await client.put(str(key, 'key'), value(v), ctx.signal) }),
      get: async ([key], ctx) => readAnswer(await client.get(str(key, 'key'), ctx.signal)),
      ...(spec.deletes ? { delete: remove } : {}),
      // the client's clock is its state: newer versions' SOs take their stamps from here
      stamp: async () => client.stamp(),
      info: async () => ({ class: 'chord-client', chord: spec.chord, peer: client.self, members: client.memberList() })
    },
    health: () => ({ ok: true })
  }
}
