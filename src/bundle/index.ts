/**
 * Code bundles: pack a directory of pre-bundled ES modules into a content-addressed bundle,
 * store it, provide it through molt's DHT, and fetch bundles from many peers in parallel,
 * verifying every block, resuming after a restart, bounded by the size the manifest declares.
 * Every node that holds blocks of a bundle (even part of it) serves them. See `docs/bundles.md`.
 *
 * @packageDocumentation
 */
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { logger } from '@libp2p/logger'
import { lpStream } from '@libp2p/utils'
import { TypedEventEmitter } from 'main-event'
import { CID } from 'multiformats/cid'
import { connectedPeers, protocolId, sendRequest, validateSystemName, InvalidOptionError, type MoltLibp2p } from '../overlay/index.ts'
import { BundleNotFoundError, BundleServiceStoppedError, BundleTooLargeError, InvalidBundleError } from './errors.ts'
import { CHUNK_SIZE, decodeFileNode, decodeRoot, encodeFile, encodeRoot, validatePath, type Block, type BundleRoot, type FileEntry, type FileNode } from './format.ts'
import { decodeReply, decodeRequest, encodeReply, encodeRequest, MAX_REFERRAL_ADDR_BYTES, MAX_REFERRAL_ADDRS, MAX_REFERRALS, MAX_REQUEST_BYTES, type BlockReply, type Referral } from './protocol.ts'
import { BundleStore, type BundleRecord } from './store.ts'
import { keyOf, Swarm, type Want } from './swarm.ts'
import type { Counter, PeerId, Stream, Connection } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'

export * from './errors.ts'
export { BUNDLE_FORMAT, CHUNK_SIZE, validatePath, decodeRoot, type BundleRoot, type FileEntry, type FileNode, type ChunkEntry } from './format.ts'
export { encodeRequest, decodeReply, encodeReply, decodeRequest, type BlockReply, type BlockRequest } from './protocol.ts'
export type { BundleRecord } from './store.ts'

const log = logger('molt:bundle')

/** Largest reply a node sends, in bytes. */
const MAX_REPLY_BYTES = 4 * 1_048_576
/** checks for peers to re-provide to while a record reached none (see `reprovideMs`) */
const REPROVIDE_CHECKS = 7

/** Bound on a reply to a `holds` question: no blocks and no referrals (it wants none), a busy flag and one CID. */
const HOLDS_REPLY_BYTES = 1024

/**
 * Every regular file under `dir`, by `/`-separated relative path: what `pack` packs. Symlinks and
 * other kinds of file are refused with `InvalidBundleError`.
 */
export async function readBundleDir (dir: string): Promise<Map<string, Uint8Array>> {
  const base = resolve(dir)
  const files = new Map<string, Uint8Array>()
  const walk = async (path: string): Promise<void> => {
    for (const entry of await readdir(path, { withFileTypes: true })) {
      const full = join(path, entry.name)
      const info = await lstat(full)
      if (info.isDirectory()) {
        await walk(full)
      } else if (info.isFile()) {
        files.set(validatePath(relative(base, full).split(sep).join('/')), new Uint8Array(await readFile(full)))
      } else {
        throw new InvalidBundleError(`cannot pack ${full}: only regular files and directories are packed`)
      }
    }
  }
  await walk(base)
  return files
}

/**
 * Builds a bundle from files without storing it: its root CID, its distinct blocks, and its size
 * (the sum of those blocks, which is what a manifest declares). Packing is deterministic, so a
 * genesis can name the bundle that `pack` later stores.
 */
export async function buildBundle (input: Map<string, Uint8Array> | Record<string, Uint8Array>, options: PackOptions & { chunkSize?: number } = {}): Promise<{ root: CID, blocks: Block[], size: number }> {
  const entries = input instanceof Map ? [...input.entries()] : Object.entries(input)
  const blocks = new Map<string, Block>()
  const files: Record<string, FileEntry> = {}
  for (const [path, bytes] of entries.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
    validatePath(path)
    const { node, chunks } = await encodeFile(bytes, options.chunkSize ?? CHUNK_SIZE)
    files[path] = { cid: node.cid, size: bytes.byteLength }
    for (const b of [node, ...chunks]) {
      blocks.set(keyOf(b.cid), b)
    }
  }
  const root = await encodeRoot(files, options.moltApi)
  blocks.set(keyOf(root.cid), root)
  let size = 0
  for (const b of blocks.values()) {
    size += b.bytes.byteLength
  }
  return { root: root.cid, blocks: [...blocks.values()], size }
}

/**
 * What the bundle service needs from the node.
 */
export interface BundleServiceComponents {
  /** the node's libp2p, with molt's services (its `moltDht` finds and announces providers) */
  libp2p: MoltLibp2p
  /** where blocks, bundle records and pins are kept (a namespace of the node's store) */
  datastore: Datastore
}

/**
 * Options of the bundle service.
 */
export interface BundleServiceInit {
  /** the system's name: it scopes the block-exchange protocol */
  system: string

  /**
   * Size of the chunks files are split into when packing, in bytes.
   *
   * @default 262144
   */
  chunkSize?: number

  /**
   * Requests in flight at once per fetch, each to a different peer.
   *
   * @default 8
   */
  concurrency?: number

  /**
   * Blocks asked for in one request.
   *
   * @default 4
   */
  batchBlocks?: number

  /**
   * Deadline of one request to a peer; a peer that misses it is left for a while and its
   * blocks are asked of others.
   *
   * @default 5000
   */
  requestTimeoutMs?: number

  /**
   * Bytes of the most recently used blocks kept in memory (0: none). A release is fetched by the
   * whole fleet at once, so a holder reads its few blocks hundreds of times in the first seconds;
   * from memory, each request leaves its serving slot at once.
   *
   * @default 8388608
   */
  blockCacheBytes?: number

  /**
   * Requests this node serves at once; beyond that it answers "busy", so askers turn to other
   * holders and distribution swarms.
   *
   * @default 4
   */
  maxServing?: number

  /**
   * How often a running fetch asks the DHT for providers again while it knows none (partial
   * holders appear); while it knows some, the interval doubles up to eight times this. While the
   * only holders it knows have answered "lack" for this long, it asks its connected peers again
   * too (provider records outlive collected bundles; a hinted peer may never get the bundle).
   *
   * @default 3000
   */
  discoveryIntervalMs?: number

  /**
   * How long a fetch asks only the peers it is connected to (and its hints) before it asks the
   * DHT for providers, as Bitswap does: during a rollout a connected peer often holds the
   * bundle already, and a query costs every node it touches. 0 queries at once.
   *
   * @default 1000
   */
  discoveryDelayMs?: number

  /**
   * How long a provider that lacked a block is not asked for it again. A connected peer that
   * is not a known provider is asked again after `discoveryIntervalMs` at the soonest (a holder
   * announces itself as a provider).
   *
   * @default 300
   */
  lackRetryMs?: number

  /**
   * How many of the most recently added bundles `gc` keeps besides those it is told to keep,
   * for peers still catching up.
   *
   * @default 3
   */
  keepRecent?: number

  /**
   * A node that fetched (part of) a bundle, or that holds bundles when it starts, announces
   * itself as a provider after a random delay of up to this long, so that a fleet fetching one
   * bundle at once, or restarting at once, does not walk the DHT at once: a walk costs every
   * node it touches, and fetchers connected to a holder find it by asking anyway. Provider
   * records serve peers connected to no holder (late joiners, nodes catching up), which the
   * first minute after a release or a restart does not hurry. Packing announces at once.
   *
   * @default 60000
   */
  announceSpreadMs?: number

  /**
   * Whether the node announces the bundles it holds in the DHT.
   *
   * @default true
   */
  provide?: boolean

  /**
   * About how many holders of a bundle among a node's connected peers should announce it in the
   * DHT. A node that fetched a bundle announces it with probability `announcers / connections`
   * (always, with that many connections or fewer); a node that packed one, or holds one at start,
   * always does. A provide walks the DHT and stores the record at about K = 20 nodes, so a fleet
   * whose every node announced each release walked the DHT once per node, and each walk stalls
   * the nodes it touches: on the 16-node testnet those walks were most of the clients' tail
   * latency outside the rollout (see docs/bundles.md). Provider records serve peers connected
   * to no holder; fetchers ask their connected peers first anyway, so a few announced holders in
   * each neighbourhood serve them as well as every holder would.
   *
   * @default 4
   */
  announcers?: number

  /**
   * The random source of the announcement's delay and of the choice above, in [0, 1).
   *
   * @default Math.random
   */
  random?: () => number

  /**
   * After a provide whose record reached no peer (the node had none yet), the node provides
   * again once it is connected to more peers than it was: checked at a random point between
   * this long and twice as long, then in periods twice as long, and so on, seven times (about
   * ten to twenty minutes in all at the default), until a provide reaches someone.
   *
   * @default 5000
   */
  reprovideMs?: number
}

/**
 * Events of the bundle service.
 */
export interface BundleServiceEvents {
  /** a bundle is completely held and verified */
  'bundle:fetched': CustomEvent<FetchResult>
  /** more of a bundle is held: `bytes` of `total` */
  'bundle:progress': CustomEvent<{ cid: CID, bytes: number, total: number }>
  /** a peer served a block that does not match its CID or listed size: refused, nothing stored */
  'bundle:rejected-block': CustomEvent<{ bundle: CID, cid: CID, peer: PeerId, reason: string, error: Error }>
}

/**
 * Options of {@link BundleService.fetch}.
 */
export interface FetchOptions {
  /** the size the manifest declares (see {@link PackResult.size}); no more is ever read */
  declaredSize: number
  /** aborts this caller's wait (the fetch itself stops when no caller waits any more) */
  signal?: AbortSignal
  /**
   * Peers to ask besides DHT providers and connected peers (e.g. the peer that passed the
   * manifest on), as known holders; added to a fetch of the same bundle already running.
   *
   * @default []
   */
  providers?: PeerId[]
}

/**
 * Options of {@link BundleService.waitForHolder}.
 */
export interface WaitForHolderOptions {
  /** aborts the wait */
  signal?: AbortSignal
  /**
   * Time between two rounds of asking.
   *
   * @default 500
   */
  intervalMs?: number
  /**
   * Most connected peers asked per round (the next round asks the next ones).
   *
   * @default 16
   */
  peersPerRound?: number
}

/**
 * What a fetch reports.
 */
export interface FetchResult {
  /** the bundle's root CID */
  cid: CID
  /** the bundle's size (sum of its distinct blocks) */
  size: number
  /** bytes this fetch read from peers (0 when the bundle was already held) */
  fetchedBytes: number
  /** blocks this fetch read from peers */
  fetchedBlocks: number
  /** bytes read, by peer id */
  fromPeers: Record<string, number>
}

/**
 * What packing reports: both go into the manifest.
 */
export interface PackResult {
  /** the bundle's root CID */
  cid: CID
  /** the bundle's size: the sum of the byte lengths of its distinct blocks (root, file nodes, chunks) */
  size: number
}

/**
 * Options of packing.
 */
export interface PackOptions {
  /**
   * The molt API range the bundle's code needs, recorded in the root.
   *
   * @default none
   */
  moltApi?: string
}

/**
 * Options of {@link BundleService.gc}.
 */
export interface GcOptions {
  /**
   * Bundles still needed (current, pending, future-SO, live past-SO bundles): kept with every
   * block they reference.
   *
   * @default []
   */
  keep?: CID[]
  /**
   * How many of the most recently added bundles to keep besides, for catching-up peers.
   *
   * @default the service's `keepRecent`
   */
  keepRecent?: number
}

/**
 * What a garbage collection removed.
 */
export interface GcResult {
  /** bundles whose records were dropped */
  removedBundles: CID[]
  /** blocks deleted */
  removedBlocks: number
}

/**
 * Counters of the service since it started.
 */
export interface BundleStats {
  /** bytes of blocks served to peers */
  servedBytes: number
  /** blocks served to peers */
  servedBlocks: number
  /** bytes of blocks read from peers */
  fetchedBytes: number
  /** blocks read from peers */
  fetchedBlocks: number
  /** peers a fetch learned of from another peer's referral (see the block-exchange wire) */
  referredPeers: number
  /** DHT walks for providers the fetches made (each costs every node it touches) */
  providerQueries: number
  /** DHT provides this node made (each a walk, and a record at about K nodes) */
  provides: number
  /** fetched bundles this node left to other holders to announce (see `announcers`) */
  providesDeclined: number
}

/**
 * The bundle service of one node.
 */
export interface BundleService {
  /** lifecycle and rejection events */
  readonly events: TypedEventEmitter<BundleServiceEvents>
  /** the block-exchange protocol id */
  readonly protocol: string

  /** registers the block-exchange protocol and announces the bundles held */
  start(): Promise<void>
  /** aborts every fetch and stops serving */
  stop(): Promise<void>

  /** packs a directory (every regular file under it; symlinks and other kinds are refused), stores and provides it */
  pack(dir: string, options?: PackOptions): Promise<PackResult>
  /** packs files given by path, stores and provides them */
  packFiles(files: Map<string, Uint8Array> | Record<string, Uint8Array>, options?: PackOptions): Promise<PackResult>

  /**
   * Fetches a bundle from peers (or returns at once when it is held). Concurrent fetches of one
   * CID share one transfer. Rejects `BundleTooLargeError` when the bundle exceeds `declaredSize`,
   * `InvalidBundleError` when its root or file nodes are malformed, the signal's reason on abort.
   */
  fetch(cid: CID, options: FetchOptions): Promise<FetchResult>

  /** whether the bundle is completely held */
  has(cid: CID): Promise<boolean>
  /**
   * Resolves with a connected peer that reports holding the whole bundle, asking connected peers
   * over the block exchange (`holds`) every `intervalMs` until one does: how a node that is the
   * bundle's only holder (a short-lived publisher) learns it may leave. Rejects with the signal's
   * reason on abort.
   */
  waitForHolder(cid: CID, options?: WaitForHolderOptions): Promise<PeerId>
  /** the bundle's decoded root; `BundleNotFoundError` unless held */
  root(cid: CID): Promise<BundleRoot>
  /** the bundle's files by path; `BundleNotFoundError` unless completely held */
  files(cid: CID): Promise<Map<string, Uint8Array>>
  /** writes the bundle's files under `dir` */
  extract(cid: CID, dir: string): Promise<void>
  /** the bundles this node records, complete or partial */
  list(): Promise<Array<{ cid: CID } & BundleRecord>>

  /** pins a bundle: `gc` never drops it */
  pin(cid: CID): Promise<void>
  /** removes a pin */
  unpin(cid: CID): Promise<void>
  /** the pinned bundles */
  pins(): Promise<CID[]>
  /**
   * Drops every bundle not pinned, not in `keep`, not among the `keepRecent` newest and not being
   * fetched, and every block no kept bundle references.
   */
  gc(options?: GcOptions): Promise<GcResult>

  /** counters since start */
  stats(): BundleStats
}

interface ActiveFetch {
  promise: Promise<FetchResult>
  controller: AbortController
  waiters: number
  /** its swarm: a caller that joins a running fetch adds the holders it names */
  swarm: Swarm
}

class DefaultBundleService implements BundleService {
  readonly events = new TypedEventEmitter<BundleServiceEvents>()
  readonly protocol: string
  private readonly libp2p: MoltLibp2p
  private readonly store: BundleStore
  private readonly options: Required<Omit<BundleServiceInit, 'system'>>
  private readonly fetches = new Map<string, ActiveFetch>()
  private shutdown = new AbortController()
  private running = false
  private serving = 0
  /**
   * Block key → the peers this node served that block to, newest last (the most recently served
   * blocks only). A busy reply refers the asker to the peers that got the blocks it asks for:
   * they hold them, so a fleet's fetches spread over the peers that already fetched, where the DHT
   * names only those whose (deliberately spread-out) provides have landed. Only peers that got
   * those very blocks: referrals to peers of another bundle sent a 100-node ring's fetchers
   * chasing peers that lacked everything.
   */
  private readonly servedTo = new Map<string, PeerId[]>()
  private provideChain: Promise<void> = Promise.resolve()
  /** bundles announced, each with the token of its announcement (gone once collected) */
  private readonly provided = new Map<string, object>()
  private readonly counters: BundleStats = { servedBytes: 0, servedBlocks: 0, fetchedBytes: 0, fetchedBlocks: 0, referredPeers: 0, providerQueries: 0, provides: 0, providesDeclined: 0 }
  private readonly metrics: { served?: Counter, fetched?: Counter, rejected?: Counter }
  private gcWrites?: Set<string>
  private readonly background = new Set<Promise<void>>()

  constructor (components: BundleServiceComponents, init: BundleServiceInit) {
    const system = validateSystemName(init.system)
    this.libp2p = components.libp2p
    this.protocol = protocolId(system, 'bundle')
    this.options = {
      chunkSize: positive(init.chunkSize, CHUNK_SIZE, 'chunkSize'),
      concurrency: positive(init.concurrency, 8, 'concurrency'),
      batchBlocks: positive(init.batchBlocks, 4, 'batchBlocks'),
      requestTimeoutMs: positive(init.requestTimeoutMs, 5000, 'requestTimeoutMs'),
      maxServing: positive(init.maxServing, 4, 'maxServing'),
      discoveryIntervalMs: positive(init.discoveryIntervalMs, 3000, 'discoveryIntervalMs'),
      discoveryDelayMs: init.discoveryDelayMs === 0 ? 0 : positive(init.discoveryDelayMs, 1000, 'discoveryDelayMs'),
      lackRetryMs: positive(init.lackRetryMs, 300, 'lackRetryMs'),
      keepRecent: init.keepRecent ?? 3,
      announceSpreadMs: init.announceSpreadMs === 0 ? 0 : positive(init.announceSpreadMs, 60_000, 'announceSpreadMs'),
      provide: init.provide ?? true,
      announcers: positive(init.announcers, 4, 'announcers'),
      random: init.random ?? Math.random,
      reprovideMs: positive(init.reprovideMs, 5000, 'reprovideMs'),
      blockCacheBytes: init.blockCacheBytes === 0 ? 0 : positive(init.blockCacheBytes, 8 * 1024 * 1024, 'blockCacheBytes')
    }
    if (this.options.chunkSize > 1_048_576) {
      throw new InvalidOptionError('chunkSize: at most 1048576')
    }
    this.store = new BundleStore(components.datastore, this.options.blockCacheBytes)
    const metrics = this.libp2p.metrics
    this.metrics = {
      served: metrics?.registerCounter('molt_bundle_served_bytes_total', { help: 'bytes of bundle blocks served to peers' }),
      fetched: metrics?.registerCounter('molt_bundle_fetched_bytes_total', { help: 'bytes of bundle blocks read from peers' }),
      rejected: metrics?.registerCounter('molt_bundle_rejected_blocks_total', { help: 'blocks refused for not matching their CID or size' })
    }
  }

  async start (): Promise<void> {
    if (this.running) {
      return
    }
    this.shutdown = new AbortController()
    await this.store.open()
    await this.libp2p.handle(this.protocol, (stream, connection) => { void this.serve(stream, connection) }, {
      maxInboundStreams: 64,
      maxOutboundStreams: 64,
      runOnLimitedConnection: false
    })
    this.running = true
    // spread, not sampled: this node may be a bundle's only holder. At once, a fleet restarting
    // together (a host reboot, a crash loop) would walk the DHT once per node per bundle in the
    // same second, each walk stalling the nodes it touches
    for await (const [cid] of this.store.bundles()) {
      this.announce(cid, { spreadMs: this.options.announceSpreadMs })
    }
  }

  async stop (): Promise<void> {
    if (!this.running) {
      return
    }
    this.running = false
    this.shutdown.abort(new BundleServiceStoppedError('the bundle service stopped'))
    await this.libp2p.unhandle(this.protocol).catch(() => {})
    await Promise.allSettled([...this.fetches.values()].map(async f => await f.promise))
    await Promise.allSettled([...this.background])
    await this.provideChain
  }

  stats (): BundleStats {
    return { ...this.counters }
  }

  private assertRunning (): void {
    if (!this.running) {
      throw new BundleServiceStoppedError('the bundle service is not running')
    }
  }

  // --- serving -------------------------------------------------------------------------------

  private async serve (stream: Stream, connection: Connection): Promise<void> {
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(30_000)])
    const busy = this.serving >= this.options.maxServing
    this.serving++
    try {
      const lp = lpStream(stream, { maxDataLength: MAX_REQUEST_BYTES })
      const { want, holds } = decodeRequest((await lp.read({ signal })).subarray())
      const reply: BlockReply = { blocks: [] }
      const asker = connection.remotePeer
      const held: CID[] = []
      for (const cid of holds) {
        if (await this.has(cid)) held.push(cid)
      }
      if (held.length > 0) reply.held = held
      let bytes = 0
      if (busy) {
        reply.busy = true
        const peers = await this.referrals(want, asker)
        if (peers.length > 0) reply.peers = peers
      } else {
        for (const cid of want) {
          const data = await this.store.getBlock(cid)
          if (data != null && bytes + data.byteLength <= MAX_REPLY_BYTES) {
            reply.blocks.push({ cid, data })
            bytes += data.byteLength
          }
        }
        for (const block of reply.blocks) this.noteServed(keyOf(block.cid), asker)
      }
      await lp.write(encodeReply(reply), { signal })
      await stream.close({ signal })
      // counted once the reply is out: an asker that gave up was not served
      this.counters.servedBytes += bytes
      this.counters.servedBlocks += reply.blocks.length
      this.metrics.served?.increment(bytes)
    } catch (err) {
      log('serving %p failed - %e', connection.remotePeer, err)
      stream.abort(err as Error)
    } finally {
      this.serving--
    }
  }

  private noteServed (key: string, peer: PeerId): void {
    const list = (this.servedTo.get(key) ?? []).filter(p => !p.equals(peer))
    list.push(peer)
    if (list.length > MAX_REFERRALS) list.shift()
    this.servedTo.delete(key)
    this.servedTo.set(key, list)
    if (this.servedTo.size > 1024) this.servedTo.delete(this.servedTo.keys().next().value as string)
  }

  /** The peers most recently served the wanted blocks, with the addresses this node knows for them. */
  private async referrals (want: CID[], asker: PeerId): Promise<Referral[]> {
    const candidates = new Map<string, PeerId>()
    for (const cid of want) {
      for (const id of [...(this.servedTo.get(keyOf(cid)) ?? [])].reverse()) {
        if (!id.equals(asker)) candidates.set(id.toString(), id)
      }
    }
    const out: Referral[] = []
    for (const id of candidates.values()) {
      if (out.length >= MAX_REFERRALS) break
      const peer = await this.libp2p.peerStore.get(id).catch(() => undefined)
      const addrs = (peer?.addresses ?? []).map(a => a.multiaddr).filter(a => a.bytes.byteLength <= MAX_REFERRAL_ADDR_BYTES).slice(0, MAX_REFERRAL_ADDRS)
      if (addrs.length > 0 || this.libp2p.getConnections(id).length > 0) out.push({ id, addrs })
    }
    return out
  }

  // --- providing -----------------------------------------------------------------------------

  /**
   * Announces `cid` in the DHT, after a random delay of up to `spreadMs`; a `fetched` bundle only
   * with probability `announcers / connections` (then).
   */
  private announce (cid: CID, { spreadMs = 0, fetched = false }: { spreadMs?: number, fetched?: boolean } = {}): void {
    const key = cid.toString()
    if (!this.options.provide || this.provided.has(key)) {
      return
    }
    const token = {}
    this.provided.set(key, token)
    // collected (gc), or announced again after that: this announcement is over
    const current = (): boolean => this.provided.get(key) === token
    const signal = this.shutdown.signal
    /** one provide, after those queued before it; the number of peers the record reached */
    const provide = async (): Promise<number | undefined> => {
      const done = this.provideChain.then(async () => {
        if (signal.aborted || !current()) return undefined
        let reached = 0
        this.counters.provides++
        try {
          for await (const event of this.libp2p.services.moltDht.provide(cid, { signal: AbortSignal.any([signal, AbortSignal.timeout(30_000)]) })) {
            if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') reached++
          }
          log('providing %c: the record reached %d peers', cid, reached)
          return reached
        } catch (err) {
          log('could not provide %c - %e', cid, err)
          return undefined
        }
      })
      this.provideChain = done.then(() => {})
      return await done
    }
    const task = (async () => {
      // spread: a delayed provide holds up no other
      if (spreadMs > 0) await sleep(this.options.random() * spreadMs, signal)
      if (signal.aborted) return
      let connected = this.libp2p.getConnections().length
      if (fetched && this.options.random() * connected >= this.options.announcers) {
        log('not announcing %c: about %d of %d connected peers are expected to', cid, this.options.announcers, connected)
        this.counters.providesDeclined++
        // a later announcement (packing the same files) is not bound by this choice
        if (current()) this.provided.delete(key)
        return
      }
      let reached = await provide()
      if (reached === undefined) {
        if (current()) this.provided.delete(key)
        return
      }
      // A record goes to the peers the walk finds now: one made before the node had any (the
      // first node of a network packing a bundle) reached nobody, kad-dht provides again only
      // after a day, and a 100-node ring's clients never found their bundle. So it is made again
      // once this node is connected to more peers than it was then. Only while it reached no
      // one, and at a random point of each check's period: a fleet whose every node packs its
      // bundles at start then walks the DHT once per bundle, spread out, not in a burst.
      for (let i = 0; reached === 0 && i < REPROVIDE_CHECKS; i++) {
        await sleep(this.options.reprovideMs * 2 ** i * (1 + this.options.random()), signal)
        if (signal.aborted || !current()) return
        const now = this.libp2p.getConnections().length
        if (now <= connected) continue
        connected = now
        reached = await provide() ?? reached
      }
    })().catch(() => {})
    this.background.add(task)
    void task.finally(() => this.background.delete(task))
  }

  // --- packing -------------------------------------------------------------------------------

  async pack (dir: string, options: PackOptions = {}): Promise<PackResult> {
    return await this.packFiles(await readBundleDir(dir), options)
  }

  async packFiles (input: Map<string, Uint8Array> | Record<string, Uint8Array>, options: PackOptions = {}): Promise<PackResult> {
    this.assertRunning()
    const { root, blocks, size } = await buildBundle(input, { chunkSize: this.options.chunkSize, ...options })
    await this.putBlocks(blocks)
    await this.store.putRecord(root, 'complete', size)
    log('packed %c: %d blocks, %d bytes', root, blocks.length, size)
    this.announce(root)
    return { cid: root, size }
  }

  private async putBlocks (blocks: Block[]): Promise<void> {
    if (this.gcWrites != null) {
      for (const b of blocks) {
        this.gcWrites.add(this.store.keyOf(b.cid))
      }
    }
    await this.store.putBlocks(blocks)
  }

  // --- fetching ------------------------------------------------------------------------------

  async fetch (cid: CID, options: FetchOptions): Promise<FetchResult> {
    this.assertRunning()
    const parsed = CID.asCID(cid)
    if (parsed == null) {
      throw new InvalidOptionError('fetch: cid must be a CID')
    }
    const declaredSize = options?.declaredSize
    if (typeof declaredSize !== 'number' || !Number.isSafeInteger(declaredSize) || declaredSize <= 0) {
      throw new InvalidOptionError(`fetch: declaredSize must be a positive safe integer (got ${String(declaredSize)})`)
    }
    options.signal?.throwIfAborted()
    const key = parsed.toString()
    let active = this.fetches.get(key)
    if (active == null) {
      const controller = new AbortController()
      const signal = AbortSignal.any([controller.signal, this.shutdown.signal])
      // made before the local record is read, so that the holders every caller names reach it
      const swarm = this.swarm(parsed, declaredSize, signal)
      const promise = this.runFetch(parsed, declaredSize, swarm, signal).finally(() => {
        this.fetches.delete(key)
      })
      active = { promise, controller, waiters: 0, swarm }
      this.fetches.set(key, active)
    }
    const entry = active
    for (const peer of options.providers ?? []) entry.swarm.addPeer(peer, true)
    entry.waiters++
    const callerSignal = options.signal
    if (callerSignal == null) {
      return await entry.promise
    }
    return await new Promise<FetchResult>((resolve, reject) => {
      const onAbort = (): void => {
        entry.waiters--
        if (entry.waiters === 0) {
          entry.controller.abort(callerSignal.reason)
        }
        reject(callerSignal.reason)
      }
      callerSignal.addEventListener('abort', onAbort, { once: true })
      entry.promise.then(resolve, reject).finally(() => { callerSignal.removeEventListener('abort', onAbort) })
    })
  }

  /** The swarm of one fetch. */
  private swarm (cid: CID, declaredSize: number, signal: AbortSignal): Swarm {
    return new Swarm(this.libp2p, {
      protocol: this.protocol,
      concurrency: this.options.concurrency,
      batchBlocks: this.options.batchBlocks,
      requestTimeoutMs: this.options.requestTimeoutMs,
      lackRetryMs: this.options.lackRetryMs,
      speculativeRetryMs: Math.max(this.options.lackRetryMs, this.options.discoveryIntervalMs),
      holderPatienceMs: this.options.discoveryIntervalMs,
      busyBackoffMs: 100,
      tickMs: 100
    }, declaredSize, signal, (block, peer, error) => {
      this.metrics.rejected?.increment()
      this.events.safeDispatchEvent('bundle:rejected-block', { detail: { bundle: cid, cid: block, peer, reason: error.message, error } })
    })
  }

  private async runFetch (cid: CID, declaredSize: number, swarm: Swarm, signal: AbortSignal): Promise<FetchResult> {
    const record = await this.store.getRecord(cid)
    if (record?.state === 'complete') {
      if (record.size > declaredSize) {
        throw new BundleTooLargeError(`bundle ${cid.toString()} has ${record.size} bytes, more than the declared ${declaredSize}`)
      }
      return { cid, size: record.size, fetchedBytes: 0, fetchedBlocks: 0, fromPeers: {} }
    }

    const discovery = new AbortController()
    const discovering = this.discover(cid, swarm, AbortSignal.any([signal, discovery.signal]))
    try {
      // 1. the root and the file nodes, kept in memory until the bundle's size is known to fit
      const metadata = new Map<string, Block>()
      const getNodes = async (cids: CID[]): Promise<Map<string, Uint8Array>> => {
        const out = new Map<string, Uint8Array>()
        const wants: Want[] = []
        for (const c of cids) {
          const k = keyOf(c)
          if (out.has(k)) {
            continue
          }
          const local = await this.store.getBlock(c)
          if (local != null) {
            out.set(k, local)
          } else {
            wants.push({ cid: c, key: k })
          }
        }
        await swarm.getBlocks(wants, async (want, bytes) => {
          out.set(want.key, bytes)
          metadata.set(want.key, { cid: want.cid, bytes })
        })
        return out
      }
      const rootBytes = (await getNodes([cid])).get(keyOf(cid))!
      const root = decodeRoot(cid, rootBytes)
      const entries = Object.values(root.files)
      const nodeBytes = await getNodes(entries.map(e => e.cid))

      const distinct = new Map<string, { cid: CID, size: number }>()
      distinct.set(keyOf(cid), { cid, size: rootBytes.byteLength })
      const chunks = new Map<string, { cid: CID, size: number }>()
      for (const entry of entries) {
        const k = keyOf(entry.cid)
        const bytes = nodeBytes.get(k)!
        const node = decodeFileNode(entry.cid, bytes, entry.size)
        distinct.set(k, { cid: entry.cid, size: bytes.byteLength })
        for (const chunk of node.chunks) {
          chunks.set(keyOf(chunk.cid), chunk)
        }
      }
      for (const [k, c] of chunks) {
        distinct.set(k, c)
      }
      let size = 0
      for (const b of distinct.values()) {
        size += b.size
      }
      if (size > declaredSize) {
        throw new BundleTooLargeError(`bundle ${cid.toString()} has ${size} bytes, more than the declared ${declaredSize}`)
      }
      await this.putBlocks([...metadata.values()])
      await this.store.putRecord(cid, 'partial', size)
      // a partial holder serves the blocks it has
      this.announce(cid, { spreadMs: this.options.announceSpreadMs, fetched: true })

      // 2. the chunks not held yet
      const wants: Want[] = []
      let held = size
      for (const [k, c] of chunks) {
        if (!(await this.store.hasBlock(c.cid))) {
          wants.push({ cid: c.cid, key: k, size: c.size })
          held -= c.size
        }
      }
      this.events.safeDispatchEvent('bundle:progress', { detail: { cid, bytes: held, total: size } })
      await swarm.getBlocks(wants, async (want, bytes) => {
        await this.putBlocks([{ cid: want.cid, bytes }])
        held += bytes.byteLength
        this.counters.fetchedBytes += bytes.byteLength
        this.counters.fetchedBlocks++
        this.metrics.fetched?.increment(bytes.byteLength)
        this.events.safeDispatchEvent('bundle:progress', { detail: { cid, bytes: held, total: size } })
      })
      // metadata read from peers counts too
      for (const b of metadata.values()) {
        this.counters.fetchedBytes += b.bytes.byteLength
        this.counters.fetchedBlocks++
      }
      await this.store.putRecord(cid, 'complete', size)
      const result: FetchResult = {
        cid,
        size,
        fetchedBytes: swarm.fetchedBytes,
        fetchedBlocks: swarm.fetchedBlocks,
        fromPeers: Object.fromEntries(swarm.fromPeers)
      }
      log('fetched %c: %d bytes, %d read from %d peers', cid, size, swarm.fetchedBytes, swarm.fromPeers.size)
      this.events.safeDispatchEvent('bundle:fetched', { detail: result })
      return result
    } finally {
      this.counters.referredPeers += swarm.referred
      // a DHT query may take a while to notice the abort: stop() waits for it, the caller does not
      discovery.abort()
      this.background.add(discovering)
      void discovering.finally(() => this.background.delete(discovering))
    }
  }

  /**
   * Finds holders of `cid` in the DHT while a fetch runs, only when the fetch needs them: no
   * holder is known (none connected served a block), or no block arrived since the last check.
   * Queries cost every node they touch (each answer looks up twenty peers in its peer store): on
   * the 16-node testnet, every node querying at the publish saturated both cores and fetches of
   * a 50 KB bundle took 10-16 s instead of 1-2 s. A query ends once it has named enough holders
   * for this fetch's parallelism; while holders are known the checks come later and later (up
   * to 8 discovery intervals); with none, at every interval.
   */
  private async discover (cid: CID, swarm: Swarm, signal: AbortSignal): Promise<void> {
    const base = this.options.discoveryIntervalMs
    let interval = base
    if (this.options.discoveryDelayMs > 0) {
      await sleep(this.options.discoveryDelayMs, signal)
    }
    let blocksSeen = -1
    while (!signal.aborted) {
      const stalled = swarm.fetchedBlocks === blocksSeen
      blocksSeen = swarm.fetchedBlocks
      if (swarm.holders > 0 && !stalled) {
        interval = Math.min(interval * 2, base * 8)
        await sleep(interval, signal)
        continue
      }
      const query = new AbortController()
      this.counters.providerQueries++
      log('finding providers of %c (%d holders known, %s)', cid, swarm.holders, swarm.holders > 0 ? 'no block since the last check' : 'none known')
      try {
        const querySignal = AbortSignal.any([signal, query.signal, AbortSignal.timeout(base * 3)])
        for await (const event of this.libp2p.services.moltDht.findProviders(cid, { signal: querySignal })) {
          if (event.name !== 'PROVIDER') continue
          log.trace('providers of %c: %p', cid, event.providers.map(p => p.id))
          for (const provider of event.providers) {
            if (provider.multiaddrs.length > 0 && this.libp2p.getConnections(provider.id).length === 0) {
              await this.libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
            }
            swarm.addPeer(provider.id, true)
          }
          if (swarm.holders >= this.options.concurrency) break
        }
      } catch (err) {
        if (!signal.aborted) {
          log('finding providers of %c failed - %e', cid, err)
        }
      } finally {
        query.abort()
      }
      interval = swarm.holders > 0 ? Math.min(interval * 2, base * 8) : base
      await sleep(interval, signal)
    }
  }

  // --- reading -------------------------------------------------------------------------------

  async waitForHolder (cid: CID, options: WaitForHolderOptions = {}): Promise<PeerId> {
    this.assertRunning()
    const intervalMs = positive(options.intervalMs, 500, 'intervalMs')
    const perRound = positive(options.peersPerRound, 16, 'peersPerRound')
    const signal = options.signal == null ? this.shutdown.signal : AbortSignal.any([options.signal, this.shutdown.signal])
    const request = encodeRequest([], [cid])
    let offset = 0
    while (true) {
      signal.throwIfAborted()
      const peers = connectedPeers(this.libp2p)
      const asked = peers.length <= perRound ? peers : Array.from({ length: perRound }, (_, i) => peers[(offset + i) % peers.length] as PeerId)
      offset += asked.length
      const answers = await Promise.all(asked.map(async peer => {
        try {
          const bytes = await sendRequest(this.libp2p, peer, this.protocol, request, {
            signal: AbortSignal.any([signal, AbortSignal.timeout(this.options.requestTimeoutMs)]),
            maxResponseBytes: HOLDS_REPLY_BYTES
          })
          return decodeReply(bytes).held?.some(c => c.equals(cid)) === true ? peer : undefined
        } catch (err) {
          // a peer without the protocol, a slow or a malformed one: not a holder this round
          log.trace('asking %p whether it holds %c failed - %e', peer, cid, err)
          return undefined
        }
      }))
      const holder = answers.find(p => p != null)
      if (holder != null) {
        return holder
      }
      await sleep(intervalMs, signal)
    }
  }

  async has (cid: CID): Promise<boolean> {
    return (await this.store.getRecord(cid))?.state === 'complete'
  }

  async root (cid: CID): Promise<BundleRoot> {
    const bytes = await this.store.getBlock(cid)
    if (bytes == null) {
      throw new BundleNotFoundError(`bundle ${cid.toString()} is not held`)
    }
    return decodeRoot(cid, bytes)
  }

  async files (cid: CID): Promise<Map<string, Uint8Array>> {
    if (!(await this.has(cid))) {
      throw new BundleNotFoundError(`bundle ${cid.toString()} is not completely held`)
    }
    const root = await this.root(cid)
    const out = new Map<string, Uint8Array>()
    for (const [path, entry] of Object.entries(root.files)) {
      const node = decodeFileNode(entry.cid, await this.mustGet(entry.cid), entry.size)
      const bytes = new Uint8Array(node.size)
      let offset = 0
      for (const chunk of node.chunks) {
        bytes.set(await this.mustGet(chunk.cid), offset)
        offset += chunk.size
      }
      out.set(path, bytes)
    }
    return out
  }

  private async mustGet (cid: CID): Promise<Uint8Array> {
    const bytes = await this.store.getBlock(cid)
    if (bytes == null) {
      throw new BundleNotFoundError(`block ${cid.toString()} is missing`)
    }
    return bytes
  }

  async extract (cid: CID, dir: string): Promise<void> {
    const base = resolve(dir)
    for (const [path, bytes] of await this.files(cid)) {
      const target = resolve(base, validatePath(path))
      if (!target.startsWith(base + sep)) {
        throw new InvalidBundleError(`bundle path ${JSON.stringify(path)} leaves the target directory`)
      }
      await mkdir(dirname(target), { recursive: true })
      await writeFile(target, bytes)
    }
  }

  async list (): Promise<Array<{ cid: CID } & BundleRecord>> {
    const out: Array<{ cid: CID } & BundleRecord> = []
    for await (const [cid, record] of this.store.bundles()) {
      out.push({ cid, ...record })
    }
    return out
  }

  // --- pins and gc ---------------------------------------------------------------------------

  async pin (cid: CID): Promise<void> {
    await this.store.pin(cid)
  }

  async unpin (cid: CID): Promise<void> {
    await this.store.unpin(cid)
  }

  async pins (): Promise<CID[]> {
    return await this.store.pins()
  }

  async gc (options: GcOptions = {}): Promise<GcResult> {
    this.gcWrites = new Set()
    try {
      const records = await this.list()
      const keep = new Set<string>([
        ...(options.keep ?? []).map(c => c.toString()),
        ...(await this.pins()).map(c => c.toString()),
        ...this.fetches.keys()
      ])
      const recent = records.sort((a, b) => b.seq - a.seq).slice(0, Math.max(0, options.keepRecent ?? this.options.keepRecent))
      for (const r of recent) {
        keep.add(r.cid.toString())
      }
      // every block a kept bundle references, as far as it is held
      const live = new Set<string>()
      for (const c of keep) {
        const cid = CID.parse(c)
        live.add(this.store.keyOf(cid))
        const rootBytes = await this.store.getBlock(cid)
        if (rootBytes == null) {
          continue
        }
        let root: BundleRoot
        try {
          root = decodeRoot(cid, rootBytes)
        } catch {
          continue
        }
        for (const entry of Object.values(root.files)) {
          live.add(this.store.keyOf(entry.cid))
          const nodeBytes = await this.store.getBlock(entry.cid)
          if (nodeBytes == null) {
            continue
          }
          for (const chunk of decodeFileNode(entry.cid, nodeBytes, entry.size).chunks) {
            live.add(this.store.keyOf(chunk.cid))
          }
        }
      }
      const removedBundles: CID[] = []
      for (const r of records) {
        if (!keep.has(r.cid.toString())) {
          await this.store.deleteRecord(r.cid)
          this.provided.delete(r.cid.toString())
          await this.libp2p.services.moltDht.cancelReprovide(r.cid).catch(() => {})
          removedBundles.push(r.cid)
        }
      }
      let removedBlocks = 0
      const dead: Array<{ key: import('interface-datastore').Key }> = []
      for await (const { key } of this.store.blockKeys()) {
        if (!live.has(key.toString())) {
          dead.push({ key })
        }
      }
      for (const { key } of dead) {
        if (!this.gcWrites.has(key.toString())) {
          await this.store.deleteKey(key)
          removedBlocks++
        }
      }
      log('gc dropped %d bundles and %d blocks', removedBundles.length, removedBlocks)
      return { removedBundles, removedBlocks }
    } finally {
      this.gcWrites = undefined
    }
  }
}

function positive (value: number | undefined, fallback: number, name: string): number {
  if (value == null) {
    return fallback
  }
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new InvalidOptionError(`${name}: must be a positive number (got ${String(value)})`)
  }
  return value
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return
  await new Promise<void>(resolve => {
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done)
  })
}

/**
 * Creates a node's bundle service. Call `start()` before use.
 */
export function createBundleService (components: BundleServiceComponents, init: BundleServiceInit): BundleService {
  return new DefaultBundleService(components, init)
}
