/**
 * The app runtime of a node: the isolated host, the upgrade layer in front of it, and the upgrade
 * manager driving both — wired to the node's chain, bundles and propagation. Only `node` knows all
 * of them; each part talks to the others through the callbacks and events given here.
 */
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { logger } from '@libp2p/logger'
import { TypedEventEmitter } from 'main-event'
import { createHost, HostNotLoadedError, type AppHost, type HostInit, type HostInvokeRequest } from '../host/index.ts'
import { createUpgradeLayer, UpgradingError, type UpgradeLayer } from '../layer/index.ts'
import { createUpgradeManager, type ScheduleHook, type ServingState, type UpgradeManager, type UpgradeManagerInit, type UpgradeRuntime } from '../manager/index.ts'
import type { BundleService } from '../bundle/index.ts'
import {
  BUILTIN_SCHEDULES, BUNDLE_SCHEDULE_PREFIX, bundleScheduleExport, createBundleSchedule, createFleetView, NO_CONTROL, rolloutSeed, UnknownScheduleError, waitForSchedule,
  type ControlState, type Evaluation, type FleetViewInit, type NetworkFleetView, type Phase
} from '../schedule/index.ts'
import type { ControlLog, ManifestChain, ManifestPropagation, PropagationEvents, RolloutControl } from '../manifest/index.ts'
import { connectedPeers, InvalidOptionError, type MoltLibp2p } from '../overlay/index.ts'
import type { MoltStore } from '../state/index.ts'
import type { UpgradePhase } from '../manager/types.ts'
import type { PeerId, PrivateKey } from '@libp2p/interface'
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
   * @default the manifest's schedule: the built-in SF its class upgrade names, with its
   * parameters, run on this node's fleet view ({@link AppRuntime.fleet})
   */
  schedule?: ScheduleHook

  /**
   * This node's fleet view (decision 10): its tags (`group` names its replica group, whose
   * status topic it joins), the peers it counts (replicas, servers, roster) and the view's
   * timing. The replica group's members should be connected to each other.
   *
   * @default no tags, no counted peers, the view's defaults
   */
  fleet?: AppFleetOptions

  /**
   * Raise this node's minimum supported version by itself once nothing below a version has been
   * seen for this long: no live counted peer in the fleet view (dead ones expire and never block
   * it), no call or reply labelled below it, and this node itself past it. The raise is local (it
   * drops this node's past-SOs; other nodes decide for themselves), never falls, and is not kept
   * across a restart, after which the full time runs again. A signed `retire` control message
   * raises the minimum everywhere at once.
   *
   * @default undefined (only `retire` control messages raise the minimum)
   */
  retireAfterMs?: number
}

/**
 * Why this node is not upgrading yet, or that it is: what `molt status` shows of the rollout.
 */
export interface RolloutStatus {
  /** the version being scheduled */
  version: number
  /** the schedule that decides: a built-in's name, `custom` for the embedder's hook */
  schedule: string
  /**
   * - `held`: rollout control holds it (paused, aborted, not on the allow-list);
   * - `waiting`: its schedule says wait (`halted` when it holds for a counted peer's failure);
   * - `go`: its schedule said go; the upgrade is under way;
   * - `catching-up`: it runs a retired version and upgrades straight through, without its
   *   schedule (docs/schedule.md, "a node that returns after its versions were retired").
   */
  state: 'held' | 'waiting' | 'halted' | 'go' | 'catching-up'
  /** why, in words */
  reason: string
  /** local time (ms) of the decision */
  at: number
}

/**
 * Options of a node's fleet view and of the default schedule that runs on it.
 */
export interface AppFleetOptions extends Omit<FleetViewInit, 'system' | 'class' | 'version'> {
  /**
   * Ask the scheduling function at least this often while waiting, even if nothing changes.
   *
   * @default 1000
   */
  evalEveryMs?: number
  /**
   * Time budget of one evaluation of a scheduling function.
   *
   * @default 50
   */
  timeoutMs?: number
}

/**
 * Events of a node's app runtime.
 */
export interface AppRuntimeEvents {
  /**
   * The schedule of a version cannot be run here (`UnknownScheduleError`: neither a built-in
   * nor `bundle:<export>`), or an evaluation of it failed (a custom SF that is not exported,
   * threw, looped, wrote to its input: `ScheduleFailedError`, `ScheduleTimeoutError`; counted
   * as wait). Each distinct error is reported once per version; the upgrade waits, the node
   * keeps running.
   */
  'schedule:error': CustomEvent<{ version: number, schedule: string, error: Error }>
}

/**
 * The parts of a node's app runtime.
 */
export interface AppRuntime {
  readonly host: AppHost
  readonly layer: UpgradeLayer
  readonly manager: UpgradeManager
  /**
   * This node's fleet view: its own status record (fed from the manager's phases), the records
   * of the peers it counts, and the rollout control as the schedules see it.
   */
  readonly fleet: NetworkFleetView
  readonly events: TypedEventEmitter<AppRuntimeEvents>
  /** where this node is in the rollout of the newest version it knows, if one is pending */
  rollout(): RolloutStatus | undefined
  /**
   * The minimum supported version this node applies: the signed one, or higher when it raised
   * its own ({@link AppRuntimeOptions.retireAfterMs}).
   */
  minimumVersion(): number
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
  /** the node's key, which signs its status records; must be the libp2p node's identity */
  privateKey: PrivateKey
  dataDir?: string
}

/**
 * Builds and starts the host, the layer and the manager of a node.
 */
export async function startAppRuntime (components: AppRuntimeComponents, options: AppRuntimeOptions): Promise<AppRuntime> {
  const { libp2p, store, chain, controls, bundles, propagation, system } = components
  if (options.retireAfterMs != null && (!Number.isFinite(options.retireAfterMs) || options.retireAfterMs <= 0)) {
    throw new InvalidOptionError(`app.retireAfterMs: expected a positive number of milliseconds, got ${String(options.retireAfterMs)}`)
  }
  const shutdown = new AbortController()
  let layer: UpgradeLayer | undefined
  let serving: ServingState | undefined
  // the app names peers by string on every call; parsing one is a base58 decode and a public key
  const parsed = new Map<string, PeerId>()
  const peerId = (peer: string): PeerId => {
    let id = parsed.get(peer)
    if (id == null) {
      if (parsed.size >= 4096) parsed.clear()
      id = peerIdFromString(peer)
      parsed.set(peer, id)
    }
    return id
  }

  // The host asks for the peer list every second to pass changes on to the app; it changes only
  // when a connection opens or closes. Listed afresh each time, it was 2 % of a 100-node
  // in-process ring's loop during a rollout.
  let peers: string[] | undefined
  const forgetPeers = (): void => { peers = undefined }
  libp2p.addEventListener('connection:open', forgetPeers, { signal: shutdown.signal })
  libp2p.addEventListener('connection:close', forgetPeers, { signal: shutdown.signal })

  const host = createHost({
    store,
    self: { peerId: libp2p.peerId.toString() },
    bundles,
    peers: () => (peers ??= connectedPeers(libp2p).map(p => p.toString())),
    call: async (peer, method, args, callOptions) => {
      if (layer == null) {
        throw new Error('the upgrade layer is not started')
      }
      const peers = [peer, ...(callOptions.alternatives ?? [])].map(peerId)
      return await layer.call(peers, method, args, {
        signal: callOptions.signal,
        version: callOptions.version,
        class: callOptions.class,
        ...(callOptions.deadlineMs != null ? { deadlineMs: callOptions.deadlineMs } : {}),
        ...(callOptions.object != null ? { object: callOptions.object } : {})
      })
    }
  }, {
    // in the data directory, not the temporary one: a node that is killed cannot clean up after
    // itself, and its restart reuses what it had written
    ...(components.dataDir != null ? { dir: join(components.dataDir, 'host') } : {}),
    ...options.host
  })

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
    prepare: async (bundle, signal) => {
      await hold([bundle], signal)
      await host.prepare(bundle, { signal })
    },
    quiesce: async (signal) => { await host.quiesce({ signal }) },
    stop: async () => { await host.unload() },
    transform: async (request) => (await host.transform(request)).invariants,
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
  let rollout: RolloutStatus | undefined
  const setRollout = (version: number, schedule: string, state: RolloutStatus['state'], reason: string): void => {
    rollout = { version, schedule, state, reason, at: Date.now() }
  }
  /** the name of the schedule that decides for a version */
  const scheduleName = (upgradeSchedule: string): string => options.schedule != null ? 'custom' : upgradeSchedule

  /** paused, aborted or not on the allow-list: this node waits, whatever its schedule says */
  const controlsPermit = async (version: number, schedule: string, signal: AbortSignal): Promise<void> => {
    const me = libp2p.peerId.toString()
    while (true) {
      const c = controls.state()
      const allowList = c.allow[version]
      const why = c.aborted.includes(version)
        ? `the rollout of version ${version} was aborted by a control message`
        : c.paused.includes(version)
          ? `the rollout of version ${version} is paused by a control message`
          : allowList != null && !allowList.includes(me)
            ? `this node is not on the allow-list of version ${version}`
            : undefined
      if (why == null) {
        return
      }
      setRollout(version, schedule, 'held', why)
      log('upgrade to %d held: %s', version, why)
      await nextControl(signal)
    }
  }

  // --- the fleet view ----------------------------------------------------------------------------
  const events = new TypedEventEmitter<AppRuntimeEvents>()
  const { evalEveryMs, timeoutMs, ...fleetInit } = options.fleet ?? {}
  const fleet = createFleetView({ libp2p, privateKey: components.privateKey }, {
    ...fleetInit,
    system,
    class: options.class
  })
  /** own-record changes are published in order; a failure is logged, never thrown at the manager */
  const publish = (patch: Parameters<NetworkFleetView['update']>[0]): void => {
    fleet.update(patch).catch(err => { log('could not update the status record - %e', err) })
  }
  const controlView = createControlView(controls)
  /** the version whose rollout the view's control state describes */
  let scheduling = chain.head().body.version
  const refreshControl = (): void => { fleet.setControl(controlView.state(scheduling)) }
  refreshControl()
  const onControlView = (): void => { controlView.catchUp(); refreshControl() }
  propagation.events.addEventListener('control:accepted', onControlView)

  const onPhase = (event: CustomEvent<{ version: number, phase: UpgradePhase }>): void => {
    const { version, phase } = event.detail
    if (version !== scheduling) {
      scheduling = version
      refreshControl()
    }
    const own = fleet.own()
    const next = statusPhase(phase)
    if (next == null) return
    if (next === 'upgrading') {
      if (own.phase !== 'upgrading' || own.target !== version) publish({ target: version, phase: 'upgrading', defer: null })
    } else if (own.target !== version || own.phase === 'running' || own.phase === 'failed' || own.phase === 'upgrading') {
      // learnt of the version, or back from a postponed quiesce: waiting (the SF then drives
      // waiting / intent / halted)
      publish({ target: version, phase: 'waiting', defer: null })
    }
  }
  const onCompleted = (event: CustomEvent<{ from: number, to: number }>): void => {
    publish({ version: event.detail.to, target: event.detail.to, phase: 'running', healthy: true, defer: null })
  }
  const onAdvanced = (event: CustomEvent<{ from: number, to: number }>): void => {
    const own = fleet.own()
    publish({ version: event.detail.to, ...(own.phase === 'running' ? { target: event.detail.to } : {}) })
  }
  const onRolledBack = (event: CustomEvent<{ version: number, error: Error }>): void => {
    publish({ target: event.detail.version, phase: 'failed', defer: null })
  }
  const onServing = (event: CustomEvent<ServingState>): void => {
    const own = fleet.own()
    if (own.version !== event.detail.version || own.class !== event.detail.class) {
      publish({ version: event.detail.version, class: event.detail.class })
    }
  }

  /** each distinct schedule error is reported once per version */
  const reported = new Set<string>()
  const report = (version: number, name: string, error: Error): void => {
    const key = `${version}/${error.name}/${error.message}`
    if (reported.has(key)) return
    if (reported.size >= 256) reported.clear()
    reported.add(key)
    log.error('the schedule "%s" of version %d: %s - %s', name, version, error.name, error.message)
    events.safeDispatchEvent('schedule:error', { detail: { version, schedule: name, error } })
  }

  /** the default schedule: the manifest's SF, run on the fleet view */
  const manifestSchedule: ScheduleHook = async ({ manifest, upgrade, signal }) => {
    const version = manifest.body.version
    const name = upgrade.schedule.name
    const seed = rolloutSeed(manifest.cid.multihash.digest)
    const builtin = Object.hasOwn(BUILTIN_SCHEDULES, name) ? BUILTIN_SCHEDULES[name] : undefined
    const exportName = bundleScheduleExport(name)
    if (builtin == null && exportName == null) {
      report(version, name, new UnknownScheduleError(name.startsWith(BUNDLE_SCHEDULE_PREFIX)
        ? `"${name}" does not name an export (bundle:<identifier>): the upgrade to ${version} waits`
        : `"${name}" is not a built-in schedule (${Object.keys(BUILTIN_SCHEDULES).join(', ')}) nor bundle:<export>: the upgrade to ${version} waits`))
      // the name is fixed by the signed manifest: wait until the attempt is given up
      await never(signal)
      return
    }
    // a custom SF is an export of the new class's bundle, run in a worker of its own
    const custom = exportName != null
      ? createBundleSchedule({ url: await host.moduleUrl(upgrade.bundle, { signal }), exportName, seed, ...(timeoutMs != null ? { timeoutMs } : {}) })
      : undefined
    let decision
    try {
      decision = await waitForSchedule({
        onDecision: (d) => {
          setRollout(version, name, d.decision === 'upgrade' ? 'go' : d.halt != null ? 'halted' : 'waiting',
            d.halt != null ? `halted: ${d.halt.reason}` : d.reason ?? (d.decision === 'upgrade' ? 'the schedule says go' : 'the schedule says wait'))
        },
        view: fleet,
        ...(custom != null ? { evaluate: async (input) => await custom.evaluate(input) } : { schedule: builtin, trusted: true }),
        params: upgrade.schedule.params ?? {},
        target: version,
        seed,
        ...(evalEveryMs != null ? { evalEveryMs } : {}),
        ...(timeoutMs != null ? { timeoutMs } : {}),
        onError: (evaluation: Evaluation) => {
          if (evaluation.error != null) report(version, name, evaluation.error)
        },
        signal
      })
    } finally {
      await custom?.close()
    }
    log('schedule "%s" of version %d says go: %s', name, version, decision.reason ?? '')
  }

  // bundle → the peer that passed its manifest on: it accepted the manifest, so it holds or
  // fetches the bundle too; asked first, it lets a fleet find a new bundle hop by hop along the
  // gossip instead of every node walking the DHT at the publish (a walk costs every node it touches)
  const passedOnBy = new Map<string, PeerId>()
  const manager = createUpgradeManager({
    store,
    chain,
    runtime,
    fetchBundle: async (cid, size, signal) => {
      const from = passedOnBy.get(cid.toString())
      await bundles.fetch(cid, { declaredSize: size, signal, providers: from != null ? [from] : [] })
    },
    schedule: async (context) => {
      const version = context.manifest.body.version
      const name = scheduleName(context.upgrade.schedule.name)
      await controlsPermit(version, name, context.signal)
      if (options.schedule != null) setRollout(version, name, 'waiting', 'the embedder\'s schedule decides')
      // a node running a retired version (back after its version was retired, or left behind by
      // a retirement) cannot call anyone: its calls fail VersionRetired. No schedule that counts
      // it as a serving peer applies; it goes straight through to a supported version, and only
      // rollout control still holds it (docs/schedule.md)
      const retired = (): boolean => manager.current.version < controls.state().minimumVersion
      const schedule = options.schedule ?? manifestSchedule
      if (!retired()) {
        const inner = new AbortController()
        const stop = (): void => { inner.abort(context.signal.reason) }
        const onRetire = (): void => { if (retired()) inner.abort(new Error('the running version was retired')) }
        context.signal.addEventListener('abort', stop, { once: true })
        propagation.events.addEventListener('control:accepted', onRetire)
        try {
          await schedule({ ...context, signal: inner.signal })
        } catch (err) {
          if (context.signal.aborted || !retired()) throw err
        } finally {
          context.signal.removeEventListener('abort', stop)
          propagation.events.removeEventListener('control:accepted', onRetire)
        }
      }
      if (retired()) {
        const minimum = controls.state().minimumVersion
        setRollout(version, name, 'catching-up', `version ${manager.current.version} is below the minimum supported version ${minimum}: upgrading without the schedule`)
        log('at retired version %d (minimum %d): upgrading to %d without the schedule', manager.current.version, minimum, version)
      }
      // a pause or abort may have come while the schedule waited
      await controlsPermit(version, name, context.signal)
      // keep the schedule's own reason (which coin, which wave...) for molt status and the record
      setRollout(version, name, 'go', rollout?.version === version && (rollout.state === 'catching-up' || rollout.state === 'go') ? rollout.reason : 'the schedule said go')
      // down from here: announced before the manager quiesces, so no replica reads this node as
      // serving while it is not
      await fleet.update({ target: version, phase: 'upgrading', defer: null })
    }
  }, {
    ...options.manager,
    class: options.class,
    minimumVersion: Math.max(options.manager?.minimumVersion ?? 0, controls.state().minimumVersion),
    ...(components.dataDir != null ? { dataDir: components.dataDir } : {})
  })
  // --- the minimum supported version: signed, or raised here once nothing below it is seen ------
  let autoMinimum = 0
  const minimumVersion = (): number => Math.max(controls.state().minimumVersion, autoMinimum, options.manager?.minimumVersion ?? 0)
  /**
   * Bundles of retired versions become collectable: what the node runs, and every version from
   * the one after it (or the minimum) to the head, is kept; so are the bundle service's
   * `keepRecent` newest, for peers catching up through retired versions.
   */
  let collecting: Promise<void> = Promise.resolve()
  const collectRetired = (): void => {
    collecting = collecting.then(async () => {
      const minimum = minimumVersion()
      const current = manager.current
      const keep: CID[] = [current.bundle]
      for (let v = Math.min(current.version + 1, minimum); v <= chain.head().body.version; v++) {
        for (const u of chain.get(v)?.body.classUpgrades ?? []) keep.push(u.bundle)
      }
      const result = await bundles.gc({ keep })
      if (result.removedBundles.length > 0) {
        log('minimum supported version %d: collected %d bundle(s), %d block(s)', minimum, result.removedBundles.length, result.removedBlocks)
      }
    }).catch(err => { log.error('collecting the bundles of retired versions failed - %e', err) })
  }
  let collectedAt = 0
  const raiseMinimum = (): void => {
    const minimum = minimumVersion()
    manager.retire(minimum)
    if (minimum > collectedAt) {
      collectedAt = minimum
      collectRetired()
    }
  }
  const onControl = (): void => { raiseMinimum() }
  propagation.events.addEventListener('control:accepted', onControl)
  /** version → local time it was last seen in use (a live counted peer, a label, this node) */
  const lastSeen = new Map<number, number>()
  const sighted = (version: number, at = Date.now()): void => {
    if ((lastSeen.get(version) ?? 0) < at) lastSeen.set(version, at)
  }
  let retireTimer: ReturnType<typeof setInterval> | undefined
  const retireAfterMs = options.retireAfterMs
  if (retireAfterMs != null) {
    const autoRetire = (): void => {
      const now = Date.now()
      for (const peer of fleet.entries()) sighted(peer.version, now)
      const current = manager.current.version
      let candidate = current
      for (const [version, at] of lastSeen) {
        if (version < candidate && now - at < retireAfterMs) candidate = version
      }
      if (candidate > autoMinimum) {
        autoMinimum = candidate
        if (candidate > controls.state().minimumVersion) {
          log('nothing below version %d seen for %d ms: raising the minimum supported version', candidate, retireAfterMs)
          raiseMinimum()
        }
      }
    }
    retireTimer = setInterval(autoRetire, Math.max(100, Math.min(5_000, retireAfterMs / 4)))
  }

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
  manager.events.addEventListener('upgrade:phase', onPhase)
  manager.events.addEventListener('upgrade:completed', onCompleted)
  manager.events.addEventListener('upgrade:advanced', onAdvanced)
  manager.events.addEventListener('upgrade:rolled-back', onRolledBack)
  manager.events.addEventListener('serving:changed', onServing)
  const onAccepted = (event: PropagationEvents['manifest:accepted']): void => {
    const { manifest, from } = event.detail
    if (from != null) {
      for (const upgrade of manifest.body.classUpgrades) {
        passedOnBy.set(upgrade.bundle.toString(), from)
        // a few releases' worth: only the newest matter for a fetch
        if (passedOnBy.size > 64) passedOnBy.delete(passedOnBy.keys().next().value as string)
      }
    }
    manager.poke()
  }
  propagation.events.addEventListener('manifest:accepted', onAccepted)
  // labels are hints: a newer version seen on a call starts a rate-limited, verified pull
  layer.events.addEventListener('version:seen', (event) => {
    sighted(event.detail.version)
    fleet.observe(event.detail)
    if (event.detail.version > chain.head().body.version) {
      propagation.hint(event.detail.peer, event.detail.version)
    }
  })
  layer.events.addEventListener('version:unknown', (event) => {
    propagation.hint(event.detail.peer, event.detail.version)
    manager.poke()
  })

  await fleet.start()
  await layer.start()
  try {
    await manager.start()
  } catch (err) {
    await layer.stop()
    await fleet.stop()
    await host.stop()
    propagation.events.removeEventListener('control:accepted', onControlView)
    throw err
  }
  log('app runtime of class %s started at version %d', options.class, manager.current.version)
  // a restart cannot know who was below its version before it: the full time runs again
  for (let v = 0; v <= manager.current.version; v++) sighted(v)
  const onCompletedSeen = (event: CustomEvent<{ from: number, to: number }>): void => { sighted(event.detail.from) }
  manager.events.addEventListener('upgrade:completed', onCompletedSeen)

  return {
    host,
    layer,
    manager,
    fleet,
    events,
    rollout () {
      if (rollout != null && rollout.version > manager.current.version && rollout.version <= chain.head().body.version) return { ...rollout }
      return undefined
    },
    minimumVersion,
    async stop () {
      shutdown.abort()
      clearInterval(retireTimer)
      await collecting
      propagation.events.removeEventListener('manifest:accepted', onAccepted)
      propagation.events.removeEventListener('control:accepted', onControl)
      propagation.events.removeEventListener('control:accepted', onControlView)
      await manager.stop()
      await layer?.stop()
      await fleet.stop()
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

/**
 * The fleet view's phase for a manager phase, or undefined when the manager's phase says nothing
 * new (`waiting` is driven by the SF; `admitted` is followed by `upgrade:completed`).
 *
 * | manager | view |
 * |---|---|
 * | accepted, fetched, future-installed, waiting | waiting (the SF then moves it to intent / halted) |
 * | quiescing, stopped, transforming, checking | upgrading |
 * | admitted (`upgrade:completed`) | running at the new version |
 * | `upgrade:rolled-back` | failed |
 */
function statusPhase (phase: UpgradePhase): Phase | undefined {
  switch (phase) {
    case 'accepted':
    case 'fetched':
    case 'future-installed':
    case 'waiting':
      return 'waiting'
    case 'quiescing':
    case 'stopped':
    case 'transforming':
    case 'checking':
      return 'upgrading'
    default:
      return undefined
  }
}

/**
 * Rollout control as the schedules see it, for the version being scheduled:
 *
 * - `paused`: the version is in {@link RolloutControl.paused};
 * - `aborted`: the version is in {@link RolloutControl.aborted};
 * - `released` (canary): an `allow` message with an empty peer list (which lifts the version's
 *   allow-list) was applied for the version: the upgrader's release of the canary phase;
 * - `resumedAt`: the local time at which this node applied the latest `resume` of the version
 *   (0 when never resumed): failures announced before it are forgiven.
 */
function createControlView (controls: ControlLog): { catchUp(): void, state(version: number): ControlState } {
  let seen = 0
  const released = new Set<number>()
  const resumedAt = new Map<number, number>()
  const catchUp = (): void => {
    const state: RolloutControl = controls.state()
    for (let seq = seen + 1; seq <= state.seq; seq++) {
      const body = controls.get(seq)?.body
      if (body == null) continue
      if (body.action.type === 'allow' && body.action.peers.length === 0) released.add(body.scope)
      if (body.action.type === 'resume') resumedAt.set(body.scope, Date.now())
    }
    seen = state.seq
  }
  catchUp()
  return {
    catchUp,
    state (version) {
      const c = controls.state()
      const paused = c.paused.includes(version)
      const aborted = c.aborted.includes(version)
      const isReleased = released.has(version)
      const resumed = resumedAt.get(version) ?? 0
      if (!paused && !aborted && !isReleased && resumed === 0) return NO_CONTROL
      return { paused, aborted, released: isReleased, resumedAt: resumed }
    }
  }
}

/** Never resolves; rejects with the signal's reason when it aborts. */
async function never (signal: AbortSignal): Promise<never> {
  signal.throwIfAborted()
  return await new Promise<never>((resolve, reject) => {
    signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
  })
}
