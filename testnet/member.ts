/**
 * One member of the testnet — a chord node or a client — wherever it runs: in its own process
 * (`node-process.ts`, behind the IPC channel) or in the launcher's process (`--in-process`).
 * It starts a molt node that runs the member's class, opens its admin socket, reports its
 * status and lifecycle events to the launcher, and answers the launcher's requests: the Chord
 * node's `info`, publishing a manifest, the partition fault, the replica group, and (clients)
 * the workload and the read-back.
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { multiaddr } from '@multiformats/multiaddr'
import { fromString } from 'uint8arrays/from-string'
import { createMoltNode, createOverlay, decodeSignedManifest, genesisFromJSON, openStore, startAdminServer, type AdminServer, type MoltNode, type MoltStore, type OverlayEncryption, type OverlayOptions } from '../src/index.ts'
import { loadIdentity } from '../src/node/identity.ts'
import { createPartitionGater } from './gater.ts'
import { wireError, type FromMember, type MemberChannel, type MemberConfig, type MemberEvent, type MemberRequest, type MemberStatus, type RequestMap } from './ipc.ts'
import { Workload } from './workload.ts'

const log = logger('molt:testnet:member')

/** What an in-process member is given besides its config. */
export interface MemberResources {
  /** its sub-level of the shared store */
  store?: MoltStore
  /** whether to measure this process's memory (not in-process: it is the launcher's) */
  measureMemory?: boolean
  /** how its connections are secured (in-process: plaintext, see {@link OverlayOptions.encryption}) */
  encryption?: OverlayEncryption
}

/** A running member. */
export interface Member {
  readonly node: MoltNode
  /** stops the workload, the admin socket and the node */
  stop(): Promise<void>
}

/** Resident set size now and its peak, MB, from `/proc/self/status` (Linux), else `rss`. */
export function memoryMb (): { rssMb: number, peakRssMb: number } {
  try {
    const status = readFileSync('/proc/self/status', 'utf8')
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0)
    return { rssMb: kb('VmRSS') / 1024, peakRssMb: kb('VmHWM') / 1024 }
  } catch {
    const rss = process.memoryUsage().rss / 1_048_576
    return { rssMb: rss, peakRssMb: rss }
  }
}

/** A member's status snapshot. */
export function statusOf (node: MoltNode, measureMemory: boolean): MemberStatus {
  // read field by field, not through node.status(): that snapshot lists addresses, peers and the
  // whole fleet view, and every member sends this every second (a 100-node in-process ring's
  // loop spent 4 % of a rollout on it)
  const memory = measureMemory ? memoryMb() : { rssMb: 0, peakRssMb: 0 }
  const cpu = measureMemory ? process.cpuUsage() : undefined
  const head = node.head().body.version
  const manager = node.app?.manager
  const control = node.controls.state()
  return {
    at: Date.now(),
    head,
    version: manager?.current.version ?? head,
    class: manager?.current.class ?? '',
    ...(manager?.phase != null ? { upgrading: manager.phase } : {}),
    fleetPhase: node.app?.fleet.own().phase ?? 'running',
    connections: node.libp2p.getConnections().length,
    halted: node.chain.halt != null,
    paused: control.paused.length > 0,
    aborted: control.aborted.length > 0,
    bad: manager?.badVersions() ?? [],
    ...memory,
    cpuMs: cpu != null ? (cpu.user + cpu.system) / 1000 : 0
  }
}

/** Dials addresses, best effort; resolves with how many connected. */
async function dialAll (node: MoltNode, addresses: string[]): Promise<number> {
  const results = await Promise.allSettled(addresses.map(async a => {
    await node.libp2p.dial(multiaddr(a), { signal: AbortSignal.timeout(5000) })
  }))
  return results.filter(r => r.status === 'fulfilled').length
}

/**
 * Starts a member and serves the launcher's requests on `channel`; sends `ready` once started.
 */
export async function startMember (config: MemberConfig, channel: MemberChannel, resources: MemberResources = {}): Promise<Member> {
  const measure = resources.measureMemory ?? true
  const send = (message: FromMember): void => { channel.send(message) }
  const gater = createPartitionGater()
  const genesis = genesisFromJSON(config.genesis)
  // the member's store: its data directory, or its sub-level of the shared store
  const ownStore = resources.store == null
  const store = resources.store ?? await openStore(config.dataDir != null ? { path: config.dataDir } : { memory: true })
  // the identity molt keeps in the store, so a restart from the data directory keeps the peer id
  const privateKey = await loadIdentity(store.namespace('node'))
  // the member's own libp2p, so that its peer book lives in memory (createOverlay's default)
  // rather than in a namespace of the store, as createMoltNode's own libp2p would keep it: the
  // peer book changes with every connection, and a restarted member relearns its peers anyway
  const libp2p = await createOverlay({ system: genesis.system, profile: 'local', listen: config.listen, privateKey, connectionGater: gater.gater, ...(resources.encryption != null ? { encryption: resources.encryption } : {}) })
  let node: MoltNode
  try {
    node = await createMoltNode({
      genesis,
      store,
      privateKey,
      libp2p,
      bootstrap: config.bootstrap,
      pack: config.pack,
      // a node fetches (then serves) only the bundles of the class it runs, through its manager:
      // half the bundle discovery traffic, when every node would otherwise fetch the client's too;
      // the publisher packs and serves every bundle
      fetchBundles: false,
      bundles: { announcers: config.announcers },
      app: {
        class: config.class,
        // generous deadlines: a testnet of 19 processes on two cores is slow at times, and a
        // version that missed a deadline here is marked bad and never retried
        manager: { retryMs: config.retryMs, transformMs: 120_000, checkMs: 120_000, quiesceMs: 20_000 },
        // sixteen processes starting at once on two cores: a worker may take a while to come up
        // bundles are written in the data directory, which a killed member cannot leave behind
        host: { startTimeoutMs: 60_000, ...(config.dataDir != null ? { dir: join(config.dataDir, 'host') } : {}) },
        fleet: { announceMs: config.fleet.announceMs, evalEveryMs: config.fleet.evalEveryMs }
      }
    })
  } catch (err) {
    // createMoltNode does not stop a libp2p it was given, nor close a store it was given
    await libp2p.stop()
    if (ownStore) await store.close()
    throw err
  }
  const app = node.app
  if (app == null) throw new Error('the member runs no app')
  let admin: AdminServer | undefined
  if (config.admin && config.dataDir != null) {
    try {
      admin = await startAdminServer(node, { dataDir: config.dataDir })
    } catch (err) {
      log.error('%s: no admin socket - %e', config.name, err)
    }
  }

  /** what its fleet view counts (see RequestMap.counted) */
  const count = async ({ group, replicas, roster }: NonNullable<MemberConfig['counted']>): Promise<void> => {
    app.fleet.setCounted({ ...(replicas != null ? { replicas } : {}), ...(roster != null ? { roster } : {}) })
    if (group != null) await app.fleet.update({ tags: { ...app.fleet.own().tags, group } })
  }
  if (config.counted != null) await count(config.counted)

  // --- what the launcher hears ----------------------------------------------------------------
  const event = (e: MemberEvent): void => {
    send({ type: 'event', event: e })
    pushStatus()
  }
  const pushStatus = (): void => { send({ type: 'status', status: statusOf(node, measure) }) }
  node.addEventListener('manifest:accepted', (e) => { event({ kind: 'manifest', at: Date.now(), version: e.detail.manifest.body.version }) })
  node.addEventListener('upgrade:phase', (e) => { event({ kind: 'phase', at: Date.now(), version: e.detail.version, phase: e.detail.phase }) })
  node.addEventListener('upgrade:completed', (e) => { event({ kind: 'completed', at: Date.now(), from: e.detail.from, to: e.detail.to }) })
  node.addEventListener('upgrade:advanced', (e) => { event({ kind: 'advanced', at: Date.now(), from: e.detail.from, to: e.detail.to }) })
  const text = (err: Error): string => `${err.name}: ${err.message}`
  node.addEventListener('upgrade:rolled-back', (e) => { event({ kind: 'rolled-back', at: Date.now(), version: e.detail.version, error: text(e.detail.error) }) })
  node.addEventListener('upgrade:postponed', (e) => { event({ kind: 'postponed', at: Date.now(), version: e.detail.version, error: text(e.detail.error) }) })
  node.addEventListener('schedule:error', (e) => { event({ kind: 'schedule-error', at: Date.now(), version: e.detail.version, error: text(e.detail.error) }) })
  node.addEventListener('rollout:halted', (e) => { event({ kind: 'halted', at: Date.now(), version: e.detail.proof.version }) })
  node.addEventListener('control:accepted', (e) => { event({ kind: 'control', at: Date.now(), seq: e.detail.control.body.seq }) })
  const statusTimer = setInterval(pushStatus, config.statusMs)
  statusTimer.unref?.()

  // --- clients: the workload --------------------------------------------------------------------
  const workload = new Workload(
    config.name,
    async (method, args, options) => await app.layer.call(node.peerId, method, args, options),
    () => app.manager.current.version,
    (ops) => { send({ type: 'ops', ops }) }
  )
  let workloadRunning = false

  // --- requests ---------------------------------------------------------------------------------
  let stopped: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    stopped ??= (async () => {
      clearInterval(statusTimer)
      if (workloadRunning) {
        workloadRunning = false
        await workload.stop()
      }
      await admin?.close().catch(() => {})
      await node.stop()
      await libp2p.stop()
      if (ownStore) await store.close()
    })()
    await stopped
  }

  type Handlers = { [K in keyof RequestMap]: (request: Extract<MemberRequest, { op: K }>) => Promise<RequestMap[K]['response']> }
  const handlers: Handlers = {
    info: async () => await app.layer.call(node.peerId, 'info', [], { deadlineMs: 3000 }),
    pack: async ({ dirs }) => {
      const cids: string[] = []
      for (const dir of dirs) cids.push((await node.bundles.pack(dir)).cid.toString())
      return { cids }
    },
    publish: async ({ manifest, pack }) => {
      for (const dir of pack) await node.bundles.pack(dir)
      const m = await decodeSignedManifest(fromString(manifest, 'base64'))
      const r = await node.publish(m)
      return { verdict: r.verdict, cid: r.cid.toString() }
    },
    partition: async ({ deny }) => {
      gater.deny(deny)
      const open = node.libp2p.getConnections().filter(c => gater.denied(c.remotePeer))
      await Promise.allSettled(open.map(async c => { await node.libp2p.hangUp(c.remotePeer) }))
      return { closed: open.length }
    },
    heal: async ({ dial }) => {
      gater.heal()
      return { dialled: await dialAll(node, dial) }
    },
    dial: async ({ addresses }) => ({ dialled: await dialAll(node, addresses) }),
    view: async () => app.fleet.entries().map(e => ({ peer: e.peer, class: e.class, version: e.version, target: e.target, phase: e.phase, source: e.source, heardMsAgo: Date.now() - e.heardAt, called: e.called })),
    counted: async (request) => {
      await count(request)
      return { ok: true }
    },
    'workload-start': async ({ plan }) => {
      if (!workloadRunning) {
        workloadRunning = true
        workload.start(plan)
      }
      return { ok: true }
    },
    'workload-stop': async () => {
      workloadRunning = false
      return await workload.stop()
    },
    verify: async ({ keys, deadlineMs }) => await workload.readBack(keys, deadlineMs),
    stop: async () => {
      await stop()
      return { ok: true }
    }
  }
  channel.onMessage((message) => {
    if (message.type !== 'request') return
    const { id, request } = message
    const handler = handlers[request.op] as (r: MemberRequest) => Promise<unknown>
    handler(request).then(
      (value) => { send({ type: 'response', id, ok: true, value: value ?? null }) },
      (err: unknown) => { send({ type: 'response', id, ok: false, error: wireError(err) }) }
    )
  })

  const status = statusOf(node, measure)
  send({ type: 'ready', peerId: node.peerId.toString(), addresses: node.libp2p.getMultiaddrs().map(ma => ma.toString()), ...(admin != null ? { admin: admin.socketPath } : {}), status })
  log('%s started: %p', config.name, node.peerId)
  return { node, stop }
}
