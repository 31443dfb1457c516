/**
 * `createMoltNode`: the one place that wires molt's parts together on a libp2p node.
 *
 * @packageDocumentation
 */
import { logger } from '@libp2p/logger'
import { TypedEventEmitter } from 'main-event'
import { createBundleService, type BundleService, type BundleServiceEvents, type BundleServiceInit } from '../bundle/index.ts'
import {
  createManifestPropagation, genesisManifest, openControlLog, openManifestChain,
  type ControlLog, type ControlVerdict, type GenesisConfig, type ManifestChain, type ManifestPropagation, type PropagationEvents,
  type PropagationInit, type RolloutControl, type SignedControl, type SignedManifest, type Verdict
} from '../manifest/index.ts'
import { assertLocalAddresses, connectedPeers, createOverlay, InvalidOptionError, parseAddress, validateSystemName, type MoltLibp2p, type OverlayProfile } from '../overlay/index.ts'
import { openStore, type MoltStore } from '../state/index.ts'
import { startAppRuntime, type AppRuntime, type AppRuntimeEvents, type AppRuntimeOptions, type RolloutStatus } from './app.ts'
import type { StatusRecord } from '../schedule/index.ts'
import { loadIdentity } from './identity.ts'
import type { UpgradeManagerEvents, UpgradePhase } from '../manager/index.ts'
import type { CID } from 'multiformats/cid'
import type { PeerId, PrivateKey } from '@libp2p/interface'
import type { Libp2pOptions } from 'libp2p'

const log = logger('molt:node')

/**
 * Options for {@link createMoltNode}.
 */
export interface MoltNodeOptions {
  /** the system's genesis configuration: name, trust policy, genesis classes */
  genesis: GenesisConfig

  /**
   * Data directory: the node's store (identity, manifests, bundles, peer store) lives here and
   * survives restarts.
   *
   * @default none: an in-memory store, gone at stop
   */
  dataDir?: string

  /**
   * An already-open store to use instead of `dataDir` (e.g. one namespace of a store shared by an
   * in-process testnet). The node does not close it.
   */
  store?: MoltStore

  /**
   * The user's own libp2p node, built with `moltServices()` among its services. The node does not
   * stop it. When given, `profile`, `listen` and `connectionGater` are not used, and
   * `privateKey` must be that node's key if the node runs an `app` (it signs the node's status
   * records).
   */
  libp2p?: MoltLibp2p

  /**
   * @default 'network'
   */
  profile?: OverlayProfile

  /**
   * Multiaddrs to listen on.
   *
   * @default ['/ip4/0.0.0.0/tcp/0'] (network) or ['/ip4/127.0.0.1/tcp/0'] (local)
   */
  listen?: string[]

  /**
   * The node's identity.
   *
   * @default the one stored in the data directory, made on first start
   */
  privateKey?: PrivateKey

  /**
   * Multiaddrs (with `/p2p/<peer id>`) dialled at start.
   *
   * @default []
   */
  bootstrap?: string[]

  /**
   * Connection gater for the libp2p node molt builds.
   *
   * @default allows every connection
   */
  connectionGater?: Libp2pOptions['connectionGater']

  /**
   * Options of the node's bundle service: chunk size, fetch limits, and `keepRecent`, how many
   * of the most recent bundles garbage collection keeps besides those still needed, for peers
   * catching up through retired versions.
   *
   * @default the bundle service's defaults
   */
  bundles?: Omit<BundleServiceInit, 'system'>

  /**
   * Whether the node fetches (and then serves) the bundles of every manifest it accepts.
   *
   * @default true
   */
  fetchBundles?: boolean

  /**
   * Bundles to pack into the node's store and serve from the start (a directory, or files by
   * path), e.g. the genesis bundle on the first node of a system.
   *
   * @default []
   */
  pack?: Array<string | Map<string, Uint8Array> | Record<string, Uint8Array>>

  /**
   * The app this node runs: its class, and options of its host, layer and upgrade manager.
   * Without it the node relays manifests, control messages and bundles but runs no app.
   *
   * @default none
   */
  app?: AppRuntimeOptions

  /**
   * Tuning of manifest propagation.
   *
   * @default the defaults of each field
   */
  propagation?: Omit<PropagationInit, 'system'>
}

/**
 * Every event a node emits; embedders, the CLI and the testnet read the same stream.
 */
export interface MoltNodeEvents extends PropagationEvents, BundleServiceEvents, UpgradeManagerEvents, AppRuntimeEvents {}

/**
 * What `publish` reports.
 */
export interface PublishResult {
  /** the manifest's body CID */
  cid: CID
  /** how the local chain took it */
  verdict: Verdict['kind']
}

/**
 * A snapshot of a node's state, as `molt status` shows it.
 */
export interface NodeStatus {
  peerId: string
  system: string
  addresses: string[]
  peers: number
  version: number
  head: string
  halted?: { version: number, a: string, b: string }
  /** what the applied control messages say */
  control: RolloutControl
  /** the app this node runs, when it runs one */
  app?: {
    class: string
    version: number
    /** the upgrade in progress */
    upgrading?: { version: number, phase: UpgradePhase }
    /** versions that failed here and are not retried */
    bad: number[]
    /** the minimum supported version this node applies (signed, or raised here) */
    minimumVersion: number
    /** why this node waits for, or goes to, the newest version it knows */
    rollout?: RolloutStatus
  }
  /**
   * The fleet as this node sees it (decision 10): its own status record and the live records of
   * the peers it counts (replica group, servers, roster, peers it called). Not the whole fleet:
   * each node knows O(k) peers; give a node a roster (or run `molt status` on several) to see more.
   */
  fleet?: {
    self: StatusRecord
    peers: FleetPeerStatus[]
  }
}

/**
 * One counted peer in {@link NodeStatus.fleet}.
 */
export interface FleetPeerStatus extends StatusRecord {
  /** a signed status record, or only the version label on a call */
  source: 'record' | 'label'
  /** milliseconds since this node last heard of the peer */
  ageMs: number
}

/**
 * A running molt node.
 */
export interface MoltNode extends TypedEventEmitter<MoltNodeEvents> {
  readonly libp2p: MoltLibp2p
  readonly peerId: PeerId
  readonly system: string
  readonly chain: ManifestChain
  readonly controls: ControlLog
  readonly bundles: BundleService
  readonly propagation: ManifestPropagation
  /** the app runtime (host, layer, upgrade manager), when the node runs an app */
  readonly app: AppRuntime | undefined
  /** the node's persistent store */
  readonly store: MoltStore

  /** the highest accepted manifest */
  head(): SignedManifest

  /**
   * Accepts a manifest locally and injects it into the network: gossip plus direct submission to
   * every connected peer.
   */
  publish(manifest: SignedManifest): Promise<PublishResult>

  /**
   * Applies a signed control message locally and injects it: gossip plus direct submission.
   * Throws a typed `ManifestError` when it is invalid.
   */
  publishControl(control: SignedControl): Promise<ControlVerdict['kind']>

  /**
   * Resolves with the peers whose head is at or past `version`, once at least `count` of the
   * connected peers report it (asked directly, every `intervalMs`).
   */
  waitForAcceptance(version: number, count: number, options?: { signal?: AbortSignal, intervalMs?: number, onProgress?(accepted: number): void }): Promise<PeerId[]>

  /** a snapshot of the node's state */
  status(): NodeStatus

  /** stops the node; every timer, stream and handle it opened is closed */
  stop(): Promise<void>
}

class Node extends TypedEventEmitter<MoltNodeEvents> implements MoltNode {
  readonly libp2p: MoltLibp2p
  readonly system: string
  readonly chain: ManifestChain
  readonly controls: ControlLog
  readonly bundles: BundleService
  readonly propagation: ManifestPropagation
  readonly store: MoltStore
  private readonly owns: { libp2p: boolean, store: boolean }

  constructor (
    libp2p: MoltLibp2p,
    system: string,
    chain: ManifestChain,
    controls: ControlLog,
    bundles: BundleService,
    propagation: ManifestPropagation,
    store: MoltStore,
    owns: { libp2p: boolean, store: boolean }
  ) {
    super()
    this.libp2p = libp2p
    this.system = system
    this.chain = chain
    this.controls = controls
    this.bundles = bundles
    this.propagation = propagation
    this.store = store
    this.owns = owns
  }

  app: AppRuntime | undefined

  get peerId (): PeerId {
    return this.libp2p.peerId
  }

  head (): SignedManifest {
    return this.chain.head()
  }

  async publish (manifest: SignedManifest): Promise<PublishResult> {
    const verdict = await this.propagation.publish(manifest)
    return { cid: manifest.cid, verdict: verdict.kind }
  }

  async publishControl (control: SignedControl): Promise<ControlVerdict['kind']> {
    return (await this.propagation.publishControl(control)).kind
  }

  async waitForAcceptance (version: number, count: number, options: { signal?: AbortSignal, intervalMs?: number, onProgress?(accepted: number): void } = {}): Promise<PeerId[]> {
    const accepted = new Map<string, PeerId>()
    while (true) {
      options.signal?.throwIfAborted()
      await Promise.allSettled(connectedPeers(this.libp2p).filter(p => !accepted.has(p.toString())).map(async peer => {
        const head = await this.propagation.exchangeHeads(peer, options.signal)
        if (head.version >= version) {
          accepted.set(peer.toString(), peer)
        }
      }))
      options.onProgress?.(accepted.size)
      if (accepted.size >= count) {
        return [...accepted.values()]
      }
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, options.intervalMs ?? 250)
        options.signal?.addEventListener('abort', () => {
          clearTimeout(timer)
          reject(options.signal?.reason)
        }, { once: true })
      })
    }
  }

  status (): NodeStatus {
    const head = this.chain.head()
    const rollout = this.app?.rollout()
    const now = Date.now()
    const halt = this.chain.halt
    return {
      peerId: this.peerId.toString(),
      system: this.system,
      addresses: this.libp2p.getMultiaddrs().map(ma => ma.toString()),
      peers: connectedPeers(this.libp2p).length,
      version: head.body.version,
      head: head.cid.toString(),
      control: this.controls.state(),
      ...(this.app != null
        ? {
            app: {
              class: this.app.manager.current.class,
              version: this.app.manager.current.version,
              ...(this.app.manager.phase != null ? { upgrading: this.app.manager.phase } : {}),
              bad: this.app.manager.badVersions(),
              minimumVersion: this.app.minimumVersion(),
              ...(rollout != null ? { rollout } : {})
            },
            fleet: {
              self: this.app.fleet.own(),
              peers: this.app.fleet.entries().map(({ heardAt, called, ...record }) => ({ ...record, ageMs: Math.max(0, now - heardAt) }))
            }
          }
        : {}),
      ...(halt != null ? { halted: { version: halt.version, a: halt.a.cid.toString(), b: halt.b.cid.toString() } } : {})
    }
  }

  async stop (): Promise<void> {
    await this.app?.stop()
    await this.propagation.stop()
    await this.bundles.stop()
    if (this.owns.libp2p) {
      await this.libp2p.stop()
    }
    if (this.owns.store) {
      await this.store.close()
    }
  }
}

/**
 * Creates and starts a molt node: opens its store, builds (or takes) its libp2p node, loads its
 * manifest chain, and joins manifest propagation and bundle exchange.
 */
export async function createMoltNode (options: MoltNodeOptions): Promise<MoltNode> {
  if (options == null || typeof options !== 'object') {
    throw new InvalidOptionError('createMoltNode: options must be an object')
  }
  if (options.genesis == null) {
    throw new InvalidOptionError('genesis: required (the system\'s genesis configuration)')
  }
  const system = validateSystemName(options.genesis.system)
  if (options.bootstrap != null && !Array.isArray(options.bootstrap)) {
    throw new InvalidOptionError('bootstrap: must be an array of multiaddr strings')
  }
  const bootstrap = (options.bootstrap ?? []).map(a => parseAddress(a, 'bootstrap'))
  if (options.profile === 'local' && options.libp2p == null) {
    assertLocalAddresses(bootstrap, 'bootstrap')
  }
  if (options.dataDir != null && options.store != null) {
    throw new InvalidOptionError('dataDir and store: give one or the other')
  }

  const ownsStore = options.store == null
  const store = options.store ?? await openStore(options.dataDir != null ? { path: options.dataDir } : { memory: true })
  let libp2p: MoltLibp2p | undefined
  let bundlesStarted: BundleService | undefined
  let propagationStarted: ManifestPropagation | undefined
  try {
    const genesis = await genesisManifest(options.genesis)
    const chain = await openManifestChain({ datastore: store.namespace('manifests'), genesis })
    const controls = await openControlLog({ datastore: store.namespace('controls'), system })
    if (options.libp2p != null && options.app != null && options.privateKey == null) {
      throw new InvalidOptionError('privateKey: required with libp2p and app (the key of that libp2p node signs the node\'s status records)')
    }
    const privateKey = options.privateKey ?? (options.libp2p == null ? await loadIdentity(store.namespace('node')) : undefined)
    libp2p = options.libp2p ?? await createOverlay({
      system,
      profile: options.profile,
      listen: options.listen,
      privateKey,
      datastore: store.namespace('libp2p'),
      connectionGater: options.connectionGater
    })
    const bundles = createBundleService({ libp2p, datastore: store.namespace('bundles') }, { ...options.bundles, system })
    const propagation = createManifestPropagation({ libp2p, chain, controls }, { ...options.propagation, system })
    const node = new Node(libp2p, system, chain, controls, bundles, propagation, store, { libp2p: options.libp2p == null, store: ownsStore })

    forward(propagation.events, node, ['manifest:accepted', 'manifest:cosigned', 'manifest:rejected', 'control:accepted', 'rollout:halted'])
    forward(bundles.events, node, ['bundle:fetched', 'bundle:progress', 'bundle:rejected-block'])
    if (options.fetchBundles ?? true) {
      node.addEventListener('manifest:accepted', (event) => {
        // the peer that passed the manifest on holds or fetches its bundles too (see the app's fetch)
        const from = event.detail.from
        for (const upgrade of event.detail.manifest.body.classUpgrades) {
          bundles.fetch(upgrade.bundle, { declaredSize: upgrade.bundleSize, providers: from != null ? [from] : [] }).catch(err => {
            log('fetching bundle %c failed - %e', upgrade.bundle, err)
          })
        }
      })
    }

    await bundles.start()
    bundlesStarted = bundles
    await propagation.start()
    propagationStarted = propagation
    for (const source of options.pack ?? []) {
      await (typeof source === 'string' ? bundles.pack(source) : bundles.packFiles(source))
    }
    await Promise.allSettled(bootstrap.map(async ma => {
      try {
        await libp2p?.dial(ma)
      } catch (err) {
        log('could not dial bootstrap address %a - %e', ma, err)
      }
    }))
    // after the bootstrap dials: the app's bundles may have to come from those peers
    if (options.app != null) {
      if (privateKey == null) {
        throw new InvalidOptionError('privateKey: required to run an app')
      }
      node.app = await startAppRuntime({ libp2p, store, chain, controls, bundles, propagation, system, privateKey, ...(options.dataDir != null ? { dataDir: options.dataDir } : {}) }, options.app)
      forward(node.app.manager.events, node, ['upgrade:phase', 'upgrade:completed', 'upgrade:advanced', 'upgrade:rolled-back', 'upgrade:postponed', 'upgrade:reversed', 'serving:changed'])
      forward(node.app.events, node, ['schedule:error'])
    }
    log('node %p started at version %d of %s', libp2p.peerId, chain.head().body.version, system)
    return node
  } catch (err) {
    await Promise.allSettled([propagationStarted?.stop(), bundlesStarted?.stop()])
    if (options.libp2p == null) {
      await libp2p?.stop()
    }
    if (ownsStore) {
      await store.close()
    }
    throw err
  }
}

/** Re-dispatches a part's events on the node, so embedders read one stream. */
function forward<E extends { [K in keyof E]: CustomEvent }> (from: TypedEventEmitter<E>, to: EventTarget, names: Array<keyof E & string>): void {
  for (const name of names) {
    from.addEventListener(name, (event) => {
      to.dispatchEvent(new CustomEvent(name, { detail: event.detail }))
    })
  }
}
