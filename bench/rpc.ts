/**
 * `npm run bench -- rpc [--calls 4000] [--warmup 500] [--via current|future-so]`
 *
 * Null-RPC latency between two libp2p nodes on loopback TCP in this process: `bare` is a plain
 * request/response handler on a new stream per request (`handleRequests`/`sendRequest`),
 * `session` the same on request sessions (one long-lived stream per peer, as the layer uses),
 * `layer` the upgrade layer (labels, strict codec, dispatch, on sessions) with the app object in
 * this thread (`invoke` returns directly). All alternate call by call, so they see the same
 * machine load. `ratio_p50` is layer against bare (the layer against plain libp2p
 * request/response, the targets' baseline), `session_ratio_p50` layer against session (the
 * layer's own work on the transport it runs on), `stream_ratio_p50` session against bare (what a
 * session saves over a new stream). `--via future-so` labels the layer's calls one version ahead, so each goes
 * through a future-SO that calls the current object (one SO hop).
 *
 * The isolated path, as a node runs it (decision 7): `isolated` is the layer in front of the
 * worker host (`createHost`, the `counter-v1` fixture loaded, its null method `echo`), so each
 * call goes layer → host worker → app method and back; `crossing` is the worker round trip alone
 * (`host.invoke` of the same method from this thread, no network), taken between the network
 * calls as a node's calls arrive; `crossing_back_to_back` is a second one right after it, with
 * the worker awake (what `bench host` measures). All alternate call by call, in a rotating
 * order, so they see the same machine load. Targets: isolated ≤ 1.3× bare, crossing ≤ 100 µs
 * p50. (`--via` applies to `layer` only: the isolated host runs no future-SO.)
 */
import { fileURLToPath } from 'node:url'
import { createHost, type AppHost, type HostInvokeRequest } from '../src/host/index.ts'
import { createOverlay, createRequestSessions, handleRequests, sendRequest, type MoltLibp2p, type RequestSessions } from '../src/overlay/index.ts'
import { createUpgradeLayer, type InvokeRequest, type UpgradeLayer } from '../src/layer/index.ts'
import { openStore, type MoltStore } from '../src/state/index.ts'

const SYSTEM = 'bench'

function quantile (sorted: number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i] as number
}

function figures (samplesNs: number[]): { p50: number, p95: number, p99: number, mean: number } {
  const us = samplesNs.map(ns => ns / 1000).sort((a, b) => a - b)
  const mean = us.reduce((s, x) => s + x, 0) / us.length
  const round = (x: number): number => Math.round(x * 10) / 10
  return { p50: round(quantile(us, 0.5)), p95: round(quantile(us, 0.95)), p99: round(quantile(us, 0.99)), mean: round(mean) }
}

function intFlag (flags: Record<string, string | boolean | undefined>, name: string, fallback: number): number {
  const raw = flags[name]
  if (raw == null) {
    return fallback
  }
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new Error(`--${name}: expected a positive integer, got ${String(raw)}`)
  }
  return n
}

export default async function rpc (flags: Record<string, string | boolean | undefined>): Promise<Record<string, unknown>> {
  const calls = intFlag(flags, 'calls', 4000)
  const warmup = intFlag(flags, 'warmup', 500)
  const via = flags.via ?? 'current'
  if (via !== 'current' && via !== 'future-so') {
    throw new Error(`--via: expected current or future-so, got ${String(via)}`)
  }

  const nodes: MoltLibp2p[] = []
  const layers: UpgradeLayer[] = []
  const sessions: RequestSessions[] = []
  let host: AppHost | undefined
  let store: MoltStore | undefined
  try {
    const server = await createOverlay({ system: SYSTEM, profile: 'local', listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(server)
    const client = await createOverlay({ system: SYSTEM, profile: 'local', listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(client)

    // bare: the overlay's plain request/response helper
    const bareProtocol = `/molt/${SYSTEM}/bare/1.0.0`
    const bareReply = new Uint8Array([0xf6]) // a one-byte answer, as a null reply would be
    await handleRequests(server, bareProtocol, async () => bareReply)
    // session: the same exchange on request sessions
    const sessionProtocol = `/molt/${SYSTEM}/session/1.0.0`
    const sessionServer = createRequestSessions({ libp2p: server }, { protocol: sessionProtocol, handler: () => bareReply })
    const sessionClient = createRequestSessions({ libp2p: client }, { protocol: sessionProtocol })
    await sessionServer.start()
    await sessionClient.start()
    sessions.push(sessionClient, sessionServer)

    // layer: the app object in this thread; a future-SO for version 2 delegates to it
    const current = { ping: (): null => null }
    const future = { ping: (): null => current.ping() }
    const invoke = ({ target, method }: InvokeRequest): unknown => {
      const obj = target.kind === 'future' ? future : current
      if (method !== 'ping') {
        throw new Error(`no method ${method}`)
      }
      return obj.ping()
    }
    const serverLayer = createUpgradeLayer({ libp2p: server }, { system: SYSTEM, state: { version: 1, class: 'bench', future: [2] }, invoke })
    const clientLayer = createUpgradeLayer({ libp2p: client }, { system: SYSTEM, state: { version: 1, class: 'bench' }, invoke })
    await serverLayer.start()
    await clientLayer.start()
    layers.push(clientLayer, serverLayer)

    // isolated: the same layer, in front of the worker host; a system of its own, so its RPC
    // protocol does not collide with the in-thread layer's on the same two nodes
    store = await openStore({ memory: true })
    host = createHost({ store, self: { peerId: server.peerId.toString() } })
    await host.load({ current: { class: 'counter', version: 1, bundle: { dir: fileURLToPath(new URL('../test/fixtures/apps/counter-v1/', import.meta.url)) } } })
    const isoSystem = `${SYSTEM}-iso`
    const isoServer = createUpgradeLayer({ libp2p: server }, { system: isoSystem, state: { version: 1, class: 'counter' }, invoke: async (request) => await (host as AppHost).invoke(request as HostInvokeRequest) })
    const isoClient = createUpgradeLayer({ libp2p: client }, { system: isoSystem, state: { version: 1, class: 'counter' }, invoke })
    await isoServer.start()
    await isoClient.start()
    layers.push(isoClient, isoServer)
    const crossingRequest: HostInvokeRequest = { target: { kind: 'current', version: 1 }, method: 'echo', args: [], peer: client.peerId.toString(), caller: { version: 1, class: 'counter' } }
    let seen = 0
    clientLayer.events.addEventListener('version:seen', () => { seen++ })

    await client.dial(server.getMultiaddrs())
    const peer = server.peerId
    const label = via === 'future-so' ? { version: 2 } : {}

    const bare = async (): Promise<void> => {
      await sendRequest(client, peer, bareProtocol, new Uint8Array([0xa0]))
    }
    const session = async (): Promise<void> => {
      await sessionClient.request(peer, new Uint8Array([0xa0]))
    }
    const layer = async (): Promise<void> => {
      await clientLayer.call(peer, 'ping', [], label)
    }
    const isolated = async (): Promise<void> => {
      await isoClient.call(peer, 'echo', [])
    }
    const crossing = async (): Promise<void> => {
      await (host as AppHost).invoke(crossingRequest)
    }

    const kinds = [bare, session, layer, isolated, crossing]
    for (let i = 0; i < warmup; i++) {
      for (const run of kinds) {
        await run()
      }
    }
    const samples = new Map<() => Promise<void>, number[]>(kinds.map(k => [k, []]))
    // a second crossing right after the first: the worker is awake then (back to back, as
    // `bench host` measures it), where the first one follows network work, as calls do in a node
    const warmNs: number[] = []
    for (let i = 0; i < calls; i++) {
      // rotate which goes first, so none always follows another
      for (let j = 0; j < kinds.length; j++) {
        const run = kinds[(i + j) % kinds.length] as () => Promise<void>
        const t0 = process.hrtime.bigint()
        await run()
        const dt = Number(process.hrtime.bigint() - t0)
        samples.get(run)?.push(dt)
        if (run === crossing) {
          const t1 = process.hrtime.bigint()
          await crossing()
          warmNs.push(Number(process.hrtime.bigint() - t1))
        }
      }
    }
    const b = figures(samples.get(bare) as number[])
    const sn = figures(samples.get(session) as number[])
    const l = figures(samples.get(layer) as number[])
    const iso = figures(samples.get(isolated) as number[])
    const c = figures(samples.get(crossing) as number[])
    const w = figures(warmNs)
    return {
      transport: 'tcp loopback, one process; bare: a new stream per call, session and layer: one stream per peer',
      via,
      calls,
      warmup,
      bare_p50_us: b.p50,
      bare_p95_us: b.p95,
      bare_p99_us: b.p99,
      bare_mean_us: b.mean,
      session_p50_us: sn.p50,
      session_p95_us: sn.p95,
      session_p99_us: sn.p99,
      session_mean_us: sn.mean,
      stream_ratio_p50: Math.round((sn.p50 / b.p50) * 1000) / 1000,
      layer_p50_us: l.p50,
      layer_p95_us: l.p95,
      layer_p99_us: l.p99,
      layer_mean_us: l.mean,
      ratio_p50: Math.round((l.p50 / b.p50) * 1000) / 1000,
      ratio_p95: Math.round((l.p95 / b.p95) * 1000) / 1000,
      session_ratio_p50: Math.round((l.p50 / sn.p50) * 1000) / 1000,
      labels_seen: seen,
      isolated_p50_us: iso.p50,
      isolated_p95_us: iso.p95,
      isolated_p99_us: iso.p99,
      isolated_mean_us: iso.mean,
      crossing_p50_us: c.p50,
      crossing_p95_us: c.p95,
      crossing_p99_us: c.p99,
      crossing_back_to_back_p50_us: w.p50,
      isolated_ratio_p50: Math.round((iso.p50 / b.p50) * 1000) / 1000,
      isolated_ratio_p95: Math.round((iso.p95 / b.p95) * 1000) / 1000,
      isolated_session_ratio_p50: Math.round((iso.p50 / sn.p50) * 1000) / 1000,
      isolated_target_met: iso.p50 <= 1.3 * b.p50,
      crossing_target_met: c.p50 <= 100
    }
  } finally {
    await Promise.allSettled(layers.map(async l => { await l.stop() }))
    await Promise.allSettled(sessions.map(async s => { await s.stop() }))
    await host?.stop()
    await store?.close()
    await Promise.allSettled(nodes.map(async n => { await n.stop() }))
  }
}
