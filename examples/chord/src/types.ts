/**
 * The version-independent vocabulary of the Chord example. Each Chord version has its own wire
 * (method names and record shapes); `api.ts` says what a node does in these terms, and each
 * `wire-vN.ts` maps it to and from its version's wire. Simulation objects are then compositions:
 * the past-SO of v2 serves the v1 wire on top of a v2 node (`serveV1(callV2(delegate))`).
 *
 * Only types come from molt: they vanish when the bundle is built, so no bundle imports molt.
 */
import type { Value } from '../../../src/index.ts'

export type { AppObject, AppStore, CallContext, HostApi, Method, ReadonlyAppStore, SimulationContext, TransformContext, Value } from '../../../src/index.ts'

/** A stored item: `v === null` is a tombstone (Chord v2 and later). */
export interface Rec {
  key: string
  /** stamp: the writing client's clock (ms) */
  t: number
  /** stamp: the writing client's peer id */
  w: string
  v: Value | null
}

/** What a node says of itself (tests, clients, the testnet's `info`). */
export interface NodeInfo {
  class: 'chord-node'
  /** the Chord version of the object that answered (through an SO: the object behind it) */
  chord: number
  peer: string
  id: string
  pred: string | null
  succs: string[]
  preds: string[]
  fingers: string[]
  /** live records, tombstones and how many of them this node is primary for */
  keys: number
  tombstones: number
  primary: number
  /** false while reads here also consult the successors (just started, or the range grew) */
  warm: boolean
  /** copies of each item the version keeps */
  r: number
}

/** A node's neighbourhood, as stabilize and check-predecessor read it. */
export interface RingState {
  pred: string | null
  succs: string[]
  preds: string[]
}

/**
 * One step of an iterative lookup: either the answer (`node` is responsible for the id, its range
 * is (`from`, `node`], and `next` are the nodes after it), or a closer node to ask.
 */
export type Step = { done: true, node: string, next: string[], from: string } | { done: false, node: string }

/** The answer of a lookup: the responsible node, the nodes after it, and the start of its range. */
export interface Found {
  node: string
  succs: string[]
  from: string
}

/** What a write answers: the stamp now stored for the key and how many nodes hold it. */
export interface Stored {
  t: number
  w: string
  copies: number
}

/** The timing and sizes of a node (and of clients), readable through `config`. */
export interface ChordConfig {
  stabilizeMs: number
  fixFingersMs: number
  checkPredecessorMs: number
  rejoinMs: number
  rehomeMs: number
  syncMs: number
  warmMs: number
  successors: number
  replicas: number
  callMs: number
}

/**
 * What one Chord node does, whatever its version. `get`, `put` answer `NotResponsibleError`
 * outside the node's range; everything a version cannot do fails `SimulationRefusedError`.
 */
export interface ChordApi {
  info(): Promise<NodeInfo>
  config(): Promise<ChordConfig>
  ping(): Promise<void>
  state(): Promise<RingState>
  /** `peer` thinks it might be our predecessor */
  notify(peer: string): Promise<boolean>
  step(id: string, avoid: string[]): Promise<Step>
  lookup(id: string, avoid: string[]): Promise<Found>
  /** a read by the node responsible for the key (tombstones included) */
  get(key: string): Promise<Rec | null>
  /** this node's own copy, wherever the key belongs */
  peek(key: string): Promise<Rec | null>
  /** a write by the node responsible for the key; `v: null` deletes */
  put(rec: Rec): Promise<Stored>
  /** hand-off: records that belong to the receiver; answers the keys it refused */
  take(recs: Rec[]): Promise<string[]>
  /** copies from a primary */
  replicate(recs: Rec[]): Promise<void>
  /** anti-entropy: the buckets (ids ending in `c + suffix`) of (lo, hi] whose digests differ */
  digest(lo: string, hi: string, suffix: string, sums: number[]): Promise<number[]>
  /** anti-entropy: takes a bucket's records, answers its own that are newer or missing there */
  exchange(lo: string, hi: string, suffix: string, recs: Rec[]): Promise<Rec[]>
  /** inspection: up to `limit` records whose keys sort after `after` */
  dump(after: string | null, limit: number): Promise<Rec[]>
}

/**
 * A read as callers outside the ring see it — what a client's `get` answers, and the v1 wire's
 * `get` and `fetch`: `{ value, stamp }`, or null (absent, or a tombstone).
 */
export function readAnswer (rec: Rec | null): Value {
  return rec == null || rec.v === null ? null : { value: rec.v, stamp: [rec.t, rec.w] }
}

/** How an API speaks a wire: a method call on the peer (or the delegate) behind it. */
export type Invoke = (method: string, args: Value[], deadlineMs?: number) => Promise<Value>

/** An error with a chosen `name`, which is what crosses the layer. */
export function named (name: string, message: string): Error {
  const err = new Error(`${name}: ${message}`)
  err.name = name
  return err
}

/** A call a version cannot implement consistently (HotOS'03 §7, criterion 2). */
export function refused (message: string): Error {
  return named('SimulationRefusedError', message)
}

/** The kind of an error that came back from a call (an app error's name travels in its message). */
export function errorKind (err: unknown): string {
  const e = err as { name?: unknown, message?: unknown } | null
  const name = typeof e?.name === 'string' ? e.name : 'Error'
  const message = typeof e?.message === 'string' ? e.message : ''
  for (const kind of ['NotResponsibleError', 'LookupFailedError', 'SimulationRefusedError', 'VersionRetiredError', 'VersionUnknownError']) {
    if (name === kind || message.startsWith(`${kind}:`) || message.includes(` ${kind}: `)) return kind
  }
  return name
}

/** Failures after which another attempt (elsewhere, or a bit later) may succeed. */
export const RETRYABLE = new Set(['UpgradingError', 'UnavailableError', 'CallTimeoutError', 'HostTimeoutError', 'WorkerCrashedError', 'TimeoutError', 'AbortError'])

/**
 * Failures that say the peer may be gone (a busy or upgrading peer answers otherwise). A refused
 * or reset connection is taken at its word; a timeout may just be a loaded machine, so only a
 * second one in a row makes a peer suspect (see `Suspects`).
 */
export const UNREACHABLE = new Set(['UnavailableError', 'CallTimeoutError', 'HostTimeoutError', 'TimeoutError'])
const TIMEOUTS = new Set(['CallTimeoutError', 'HostTimeoutError', 'TimeoutError'])

/**
 * Peers to avoid for a while after they failed, for longer each time they keep failing. Both the
 * ring and the client keep one.
 */
export class Suspects {
  private readonly map = new Map<string, { until: number, backoff: number, strikes: number, failures: number }>()

  private readonly baseMs: number
  private readonly maxMs: number

  constructor (baseMs: number, maxMs: number) {
    this.baseMs = baseMs
    this.maxMs = maxMs
  }

  has (peer: string): boolean {
    const s = this.map.get(peer)
    return s != null && s.until > Date.now()
  }

  /** Records a failure; true if the peer is now suspect. */
  failed (peer: string, err: unknown): boolean {
    const kind = errorKind(err)
    if (!UNREACHABLE.has(kind)) return this.has(peer)
    const s = this.map.get(peer) ?? { until: 0, backoff: 0, strikes: 0, failures: 0 }
    s.strikes++
    if (TIMEOUTS.has(kind) && s.strikes < 2 && !this.has(peer)) {
      this.map.set(peer, s)
      return false
    }
    s.backoff = s.backoff === 0 ? this.baseMs : Math.min(this.maxMs, s.backoff * 2)
    s.until = Date.now() + s.backoff
    s.failures++
    this.map.set(peer, s)
    if (this.map.size > 1024) {
      const now = Date.now()
      for (const [p, x] of this.map) if (x.until < now && x.strikes === 0) this.map.delete(p)
    }
    return true
  }

  /** How many times in a row the peer was made suspect. */
  failures (peer: string): number {
    return this.map.get(peer)?.failures ?? 0
  }

  ok (peer: string): void {
    if (this.map.size > 0) this.map.delete(peer)
  }

  forget (peer: string): void {
    this.map.delete(peer)
  }
}
