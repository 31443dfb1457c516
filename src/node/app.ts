/**
 * The app runtime of a node: the isolated host, the upgrade layer in front of it, and the upgrade
 * manager driving both — wired to the node's chain, bundles and propagation. Only `node` knows all
 * of them; each part talks to the others through the callbacks and events given here.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { logger } from '@libp2p/logger'
import { createHost, HostNotLoadedError, type AppHost, type HostInit, type HostInvokeRequest } from '../host/index.ts'
import { createUpgradeLayer, UpgradingError, type UpgradeLayer } from '../layer/index.ts'
import { createUpgradeManager, type ScheduleHook, type ServingState, type UpgradeManager, type UpgradeManagerInit, type UpgradeRuntime } from '../manager/index.ts'
import type { BundleService } from '../bundle/index.ts'
import type { ControlLog, ManifestChain, ManifestPropagation } from '../manifest/index.ts'
import type { MoltLibp2p } from '../overlay/index.ts'
import type { MoltStore } from '../state/index.ts'
import type { CID } from 'multiformats/cid'

const log = logger('molt:node:app')

/**
 * Options of a node's app runtime.
 */
export interface AppRuntimeOptions {
  /** the class this node runs at genesis */
  class: string

  /**
   * Options of the isolated host.
   *
   * @default the host's defaults
   */
  host?: HostInit

  /**
   * Options of the upgrade manager.
   *
   * @default the manager's defaults
   */
  manager?: Omit<UpgradeManagerInit, 'class' | 'dataDir'>

  /**
   * When this node may upgrade. Rollout control comes first: while the version is paused or
   * aborted, or this node is not on its allow-list, the node waits whatever the schedule says.
   *
   * @default eager: at once
   */
  schedule?: ScheduleHook
}

/**
 * The parts of a node's app runtime.
 */
export interface AppRuntime {
  readonly host: AppHost
  readonly layer: UpgradeLayer
  readonly manager: UpgradeManager
  stop(): Promise<void>
}

interface AppRuntimeComponents {
  libp2p: MoltLibp2p
  store: MoltStore
  chain: ManifestChain
  controls: ControlLog
  bundles: BundleService
  propagation: ManifestPropagation
  system: string
  dataDir?: string
}

/**
 * Builds and starts the host, the layer and the manager of a node.
 */
export async function startAppRuntime (components: AppRuntimeComponents, options: AppRuntimeOptions): Promise<AppRuntime> {
  const { libp2p, store, chain, controls, bundles, propagation, system } = components
  const shutdown = new AbortController()
  let layer: UpgradeLayer | undefined
  let serving: ServingState | undefined

  const host = createHost({
    store,
    self: { peerId: libp2p.peerId.toString() },
    bundles,
    peers: () => libp2p.getPeers().map(p => p.toString()),
    call: async (peer, method, args, callOptions) => {
      if (layer == null) {
        throw new Error('the upgrade layer is not started')
      }
      const peers = [peer, ...(callOptions.alternatives ?? [])].map(p => peerIdFromString(p))
      return await layer.call(peers, method, args, {
        signal: callOptions.signal,
        version: callOptions.version,
        class: callOptions.class,
        ...(callOptions.deadlineMs != null ? { deadlineMs: callOptions.deadlineMs } : {}),
        ...(callOptions.object != null ? { object: callOptions.object } : {})
      })
    }
  }, options.host)

  /** every bundle a spec names must be held before the host loads it */
  const hold = async (cids: CID[], signal: AbortSignal): Promise<void> => {
    for (const cid of cids) {
      if (!(await bundles.has(cid))) {
        const size = declaredSize(chain, cid)
        await bundles.fetch(cid, { declaredSize: size, signal })
      }
    }
  }

  const runtime: UpgradeRuntime = {
    run: async (spec, signal) => {
      await hold([spec.current.bundle, ...spec.past.map(l => l.bundle), ...spec.future.map(l => l.bundle)], signal)
      await host.load(spec, { signal })
    },
    installFuture: async (link, signal) => {
      await hold([link.bundle], signal)
      await host.installFuture(link, { signal })
    },
    quiesce: async (signal) => { await host.quiesce({ signal }) },
    stop: async () => { await host.stop() },
    transform: async (request) => { await host.transform(request) },
    health: async (signal) => await host.health({ signal }),
    invariants: async (bundle, namespace, signal) => await host.invariants(bundle, namespace, { signal })
  }

  /** resolves at the next applied control message (or rejects when the signal aborts) */
  const nextControl = async (signal: AbortSignal): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        propagation.events.removeEventListener('control:accepted', done)
        signal.removeEventListener('abort', onAbort)
        resolve()
      }
      const onAbort = (): void => { done(); reject(signal.reason) }
      propagation.events.addEventListener('control:accepted', done)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }
  /** paused, aborted or not on the allow-list: this node waits, whatever its schedule says */
  const controlsPermit = async (version: number, signal: AbortSignal): Promise<void> => {
    const me = libp2p.peerId.toString()
    while (true) {
      const c = controls.state()
      const allowList = c.allow[version]
      if (!c.paused.includes(version) && !c.aborted.includes(version) && (allowList == null || allowList.includes(me))) {
        return
      }
      log('upgrade to %d held by rollout control (paused %s, aborted %s, allowed %s)', version, c.paused.includes(version), c.aborted.includes(version), allowList == null || allowList.includes(me))
      await nextControl(signal)
    }
  }

  const manager = createUpgradeManager({
    store,
    chain,
    runtime,
    fetchBundle: async (cid, size, signal) => { await bundles.fetch(cid, { declaredSize: size, signal }) },
    schedule: async (context) => {
      await controlsPermit(context.manifest.body.version, context.signal)
      await options.schedule?.(context)
      // a pause or abort may have come while the schedule waited
      await controlsPermit(context.manifest.body.version, context.signal)
    }
  }, {
    ...options.manager,
    class: options.class,
    minimumVersion: Math.max(options.manager?.minimumVersion ?? 0, controls.state().minimumVersion),
    ...(components.dataDir != null ? { dataDir: components.dataDir } : {})
  })
  const onControl = (): void => { manager.retire(controls.state().minimumVersion) }
  propagation.events.addEventListener('control:accepted', onControl)

  // until the manager has loaded the app, every call answers Upgrading (retryable)
  layer = createUpgradeLayer({ libp2p }, {
    system,
    state: { version: 0, class: options.class, quiescing: true },
    invoke: async (request) => {
      // an old version that ran this very code is answered by the current object
      const target = serving?.aliases.includes(request.target.version) === true
        ? { kind: 'current' as const, version: serving.version }
        : request.target
      try {
        return await host.invoke({ ...request, target } as HostInvokeRequest)
      } catch (err) {
        // between two versions (a reload, a restart after a crash) the node is upgrading: a
        // retryable answer, not the app's error
        if (err instanceof HostNotLoadedError) {
          throw new UpgradingError(`this node is between versions (${err.message})`)
        }
        throw err
      }
    }
  })
  manager.events.addEventListener('serving:changed', (event) => {
    serving = event.detail
    const { version, class: klass, minimumVersion, past, future, quiescing } = event.detail
    layer?.update({ version, class: klass, minimumVersion, past, future, quiescing })
  })
  const onAccepted = (): void => { manager.poke() }
  propagation.events.addEventListener('manifest:accepted', onAccepted)
  // labels are hints: a newer version seen on a call starts a rate-limited, verified pull
  layer.events.addEventListener('version:seen', (event) => {
    if (event.detail.version > chain.head().body.version) {
      propagation.hint(event.detail.peer, event.detail.version)
    }
  })
  layer.events.addEventListener('version:unknown', (event) => {
    propagation.hint(event.detail.peer, event.detail.version)
    manager.poke()
  })

  await layer.start()
  try {
    await manager.start()
  } catch (err) {
    await layer.stop()
    await host.stop()
    throw err
  }
  log('app runtime of class %s started at version %d', options.class, manager.current.version)

  return {
    host,
    layer,
    manager,
    async stop () {
      shutdown.abort()
      propagation.events.removeEventListener('manifest:accepted', onAccepted)
      propagation.events.removeEventListener('control:accepted', onControl)
      await manager.stop()
      await layer?.stop()
      await host.stop()
    }
  }
}

/** The size a manifest of the chain declares for a bundle (the genesis included). */
function declaredSize (chain: ManifestChain, cid: CID): number {
  for (let v = chain.head().body.version; v >= 0; v--) {
    const upgrade = chain.get(v)?.body.classUpgrades.find(u => u.bundle.equals(cid))
    if (upgrade != null) {
      return upgrade.bundleSize
    }
  }
  throw new Error(`no manifest of the chain names bundle ${cid.toString()}`)
}
