/**
 * The multi-peer block fetcher of one bundle fetch: asks several peers in parallel (DHT
 * providers and directly-connected peers), verifies every block, keeps to a byte budget, and
 * moves off peers that stall, fail or serve bad blocks.
 */
import { logger } from '@libp2p/logger'
import { toString } from 'uint8arrays/to-string'
import { sendRequest, type MoltLibp2p } from '../overlay/index.ts'
import { BundleTooLargeError, InvalidBlockError } from './errors.ts'
import { verifyBlock, MAX_NODE_BYTES } from './format.ts'
import { decodeReply, encodeRequest, MAX_REFERRALS_BYTES, MAX_WANT, REPLY_OVERHEAD_PER_BLOCK, type Referral } from './protocol.ts'
import type { CID } from 'multiformats/cid'
import type { PeerId } from '@libp2p/interface'

const log = logger('molt:bundle:swarm')

/** The longest a fetch waits before asking a busy peer again. */
const MAX_BUSY_BACKOFF_MS = 3000

/** Tuning of a swarm. */
export interface SwarmOptions {
  protocol: string
  concurrency: number
  batchBlocks: number
  requestTimeoutMs: number
  /** how long a provider that said it lacks a block is not asked for it again (partial holders grow) */
  lackRetryMs: number
  /**
   * How long a connected peer that is not a known provider, and lacked a block, is not asked for
   * it again. Holders announce themselves as providers once they hold a block, so asking such a
   * peer sooner mostly costs streams: with every node of a fleet fetching at once, each asking
   * every connected peer every few hundred ms, those requests crowded out the fleet's own traffic.
   */
  speculativeRetryMs: number
  /**
   * How long a named holder may answer only "lack" before the fetch also asks its connected
   * peers again. Provider records outlive the bundles they name (a node that collected a bundle
   * stays in the others' provider stores), and a hinted peer may never get the bundle; while such
   * a peer counted, the fetch never asked its connected peers, and a node catching up to a
   * retired version waited for a holder's spread announcement (up to a minute). The DHT walks'
   * backoff still counts it: with walks every interval instead, on a 100-node in-process ring
   * whose forwarders take a minute to get a bundle, the first arc's 25 TFs all passed their 60 s
   * bound (one run; docs/benchmarks.md).
   */
  holderPatienceMs: number
  busyBackoffMs: number
  tickMs: number
}

/** A block wanted by a swarm; `size` is known for chunks, not for root and file nodes. */
export interface Want {
  cid: CID
  key: string
  size?: number
}

interface PeerState {
  id: PeerId
  busy: boolean
  until: number
  failures: number
  bad: boolean
  /** named as a holder (a DHT provider, a hint, or it served a block of this bundle), not only connected */
  provider: boolean
  /** "busy" answers in a row */
  busyReplies: number
  /** block key → when this peer may be asked for it again */
  lacks: Map<string, number>
  /** when it first answered without a block since it last served one */
  lackingSince?: number
}

/** What a swarm reports back about a peer serving a bad block. */
export type RejectHandler = (cid: CID, peer: PeerId, error: Error) => void

/**
 * One fetch's swarm of peers.
 */
export class Swarm {
  private readonly peers = new Map<string, PeerState>()
  private wakeUp?: () => void
  /** bytes still allowed to be read for this bundle */
  remaining: number
  /** bytes received, by peer id */
  readonly fromPeers = new Map<string, number>()
  fetchedBytes = 0
  fetchedBlocks = 0
  /** peers added because another peer referred us to them */
  referred = 0
  /** when the connected peers were last listed */
  private refreshedAt = -Infinity

  private readonly libp2p: MoltLibp2p
  private readonly options: SwarmOptions
  private readonly signal: AbortSignal
  private readonly onReject: RejectHandler

  constructor (
    libp2p: MoltLibp2p,
    options: SwarmOptions,
    budget: number,
    signal: AbortSignal,
    onReject: RejectHandler
  ) {
    this.libp2p = libp2p
    this.options = options
    this.signal = signal
    this.onReject = onReject
    this.remaining = budget
  }

  /**
   * Adds a candidate peer: a holder (a DHT provider, a hint) or a connected peer that may hold
   * the blocks. A known peer newly named as a holder is asked again at once.
   */
  addPeer (id: PeerId, provider = false): void {
    if (id.equals(this.libp2p.peerId)) {
      return
    }
    const key = id.toString()
    const known = this.peers.get(key)
    if (known == null) {
      this.peers.set(key, { id, busy: false, until: 0, failures: 0, bad: false, provider, busyReplies: 0, lacks: new Map() })
      this.wake()
    } else if (provider && !known.provider) {
      known.provider = true
      known.lacks.clear()
      this.wake()
    }
  }

  /** A peer a holder referred us to (one it served): a likely holder, dialled by its addresses. */
  private async refer (referral: Referral): Promise<void> {
    if (referral.id.equals(this.libp2p.peerId) || this.peers.get(referral.id.toString())?.provider === true) {
      return
    }
    if (referral.addrs.length > 0 && this.libp2p.getConnections(referral.id).length === 0) {
      await this.libp2p.peerStore.merge(referral.id, { multiaddrs: referral.addrs }).catch(() => {})
    }
    this.referred++
    this.addPeer(referral.id, true)
  }

  /** how many peers are known holders (DHT providers, hints, peers that served a block) */
  get holders (): number {
    return this.countHolders(-Infinity)
  }

  /** known holders that have not answered only "lack" since before `staleBefore` */
  private countHolders (staleBefore: number): number {
    let n = 0
    for (const p of this.peers.values()) {
      if (p.provider && !p.bad && (p.lackingSince == null || p.lackingSince > staleBefore)) n++
    }
    return n
  }

  /** wakes the scheduler (a peer appeared, a request ended) */
  wake (): void {
    this.wakeUp?.()
  }

  /**
   * Adds the peers connected now: at once, then at most once a second while no holder is known
   * (with one known, connected peers are only guesses). Listing them at every scheduler tick
   * (100 ms) of every fetch took a fifth of a 100-node in-process ring's event loop, and once a
   * second still a quarter during its rollout (`getPeers()` parses a peer id per connection).
   */
  private refreshConnected (): void {
    const now = Date.now()
    if (now - this.refreshedAt < 1000 || (this.refreshedAt > 0 && this.countHolders(now - this.options.holderPatienceMs) > 0)) return
    this.refreshedAt = now
    for (const connection of this.libp2p.getConnections()) {
      this.addPeer(connection.remotePeer)
    }
  }

  private async sleep (): Promise<void> {
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.signal.removeEventListener('abort', done)
        this.wakeUp = undefined
        resolve()
      }
      const timer = setTimeout(done, this.options.tickMs)
      this.signal.addEventListener('abort', done)
      this.wakeUp = done
    })
  }

  /**
   * Fetches every wanted block, verifying each, and hands each good one to `deliver` (which
   * stores or keeps it). Resolves when all are delivered; rejects on abort or
   * `BundleTooLargeError`.
   */
  async getBlocks (wants: Want[], deliver: (want: Want, bytes: Uint8Array) => Promise<void>): Promise<void> {
    const pending = new Map<string, Want>()
    for (const want of shuffle(wants)) {
      pending.set(want.key, want)
    }
    const inflight = new Set<string>()
    const tasks = new Set<Promise<void>>()
    let fatal: Error | undefined

    const request = async (peer: PeerState, batch: Want[]): Promise<void> => {
      const unknown = batch.filter(w => w.size == null).length
      const known = batch.reduce((n, w) => n + (w.size ?? 0), 0)
      const maxResponseBytes = known + unknown * MAX_NODE_BYTES + REPLY_OVERHEAD_PER_BLOCK * (batch.length + 1) + MAX_REFERRALS_BYTES
      const signal = AbortSignal.any([this.signal, AbortSignal.timeout(this.options.requestTimeoutMs)])
      const started = Date.now()
      try {
        const reply = decodeReply(await sendRequest(this.libp2p, peer.id, this.options.protocol, encodeRequest(batch.map(w => w.cid)), { signal, maxResponseBytes }))
        log.trace('%p answered %d of %d blocks%s in %d ms', peer.id, reply.blocks.length, batch.length, reply.busy === true ? ' (busy)' : '', Date.now() - started)
        for (const referral of reply.peers ?? []) {
          await this.refer(referral)
        }
        if (reply.busy === true) {
          // a busy holder is asked again later and later: at once, every fetcher of a fleet
          // retrying every ~100 ms kept the holder answering "busy" instead of serving
          peer.busyReplies++
          peer.until = Date.now() + Math.min(this.options.busyBackoffMs * 2 ** peer.busyReplies, MAX_BUSY_BACKOFF_MS) * (0.5 + Math.random())
          return
        }
        peer.busyReplies = 0
        const byKey = new Map(batch.map(w => [w.key, w]))
        const got = new Set<string>()
        for (const block of reply.blocks) {
          const want = byKey.get(keyOf(block.cid))
          if (want == null || got.has(want.key)) {
            throw new InvalidBlockError(`unsolicited block ${block.cid.toString()}`)
          }
          if (want.size != null && block.data.byteLength !== want.size) {
            this.reject(peer, want.cid, new InvalidBlockError(`block ${want.cid.toString()} has ${block.data.byteLength} bytes, the bundle lists ${want.size}`))
            return
          }
          if (!(await verifyBlock(want.cid, block.data))) {
            this.reject(peer, want.cid, new InvalidBlockError(`block ${want.cid.toString()} does not match its CID`))
            return
          }
          if (!pending.has(want.key)) {
            continue // another peer delivered it meanwhile
          }
          if (block.data.byteLength > this.remaining) {
            throw new BundleTooLargeError(`block ${want.cid.toString()} (${block.data.byteLength} bytes) would take the bundle past its declared size`)
          }
          this.remaining -= block.data.byteLength
          this.fetchedBytes += block.data.byteLength
          this.fetchedBlocks++
          const p = peer.id.toString()
          this.fromPeers.set(p, (this.fromPeers.get(p) ?? 0) + block.data.byteLength)
          pending.delete(want.key)
          got.add(want.key)
          // it holds (part of) the bundle: ask it first for the next blocks, as a named holder,
          // rather than trying connected peers at random again for every level of the DAG
          peer.provider = true
          peer.lackingSince = undefined
          await deliver(want, block.data)
        }
        if (reply.blocks.length === 0) peer.lackingSince ??= Date.now()
        const retryAt = Date.now() + (peer.provider ? this.options.lackRetryMs : this.options.speculativeRetryMs)
        for (const w of batch) {
          if (!got.has(w.key)) {
            peer.lacks.set(w.key, retryAt)
          }
        }
        peer.failures = 0
      } catch (err) {
        if (err instanceof BundleTooLargeError) {
          fatal = err
          return
        }
        if (err instanceof InvalidBlockError) {
          this.reject(peer, batch[0]!.cid, err)
          return
        }
        if (this.signal.aborted) {
          return
        }
        const cause = (err as { cause?: Error }).cause
        if (cause?.name === 'UnsupportedProtocolError') {
          peer.bad = true
        }
        peer.failures++
        peer.until = Date.now() + Math.min(250 * 2 ** peer.failures, 10_000)
        log('request to %p for %d blocks failed - %e', peer.id, batch.length, err)
      } finally {
        for (const w of batch) {
          inflight.delete(w.key)
        }
        peer.busy = false
        this.wake()
      }
    }

    while (pending.size > 0) {
      if (fatal != null) {
        break
      }
      if (this.signal.aborted) {
        break
      }
      this.refreshConnected()
      const now = Date.now()
      const candidates = shuffle([...this.peers.values()].filter(p => !p.bad && !p.busy && p.until <= now))
      // prefer holders, then the peers that failed least
      candidates.sort((a, b) => Number(b.provider) - Number(a.provider) || a.failures - b.failures)
      for (const peer of candidates) {
        if (tasks.size >= this.options.concurrency) {
          break
        }
        const batch: Want[] = []
        for (const want of pending.values()) {
          if (batch.length >= Math.min(this.options.batchBlocks, MAX_WANT)) {
            break
          }
          if (inflight.has(want.key)) {
            continue
          }
          const lacked = peer.lacks.get(want.key)
          if (lacked != null && now < lacked) {
            continue
          }
          batch.push(want)
        }
        if (batch.length === 0) {
          continue
        }
        for (const w of batch) {
          inflight.add(w.key)
        }
        peer.busy = true
        const task = request(peer, batch).finally(() => { tasks.delete(task) })
        tasks.add(task)
      }
      await this.sleep()
    }
    await Promise.allSettled([...tasks])
    if (fatal != null) {
      throw fatal
    }
    this.signal.throwIfAborted()
  }

  private reject (peer: PeerState, cid: CID, error: Error): void {
    peer.bad = true
    log('refused block %c from %p - %s', cid, peer.id, error.message)
    this.onReject(cid, peer.id, error)
  }
}

/** the key a wanted block is tracked under: its multihash */
export function keyOf (cid: CID): string {
  return toString(cid.multihash.bytes, 'base64')
}

function shuffle<T> (items: T[]): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const t = out[i]!
    out[i] = out[j]!
    out[j] = t
  }
  return out
}
