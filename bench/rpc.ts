/**
 * `npm run bench -- rpc [--calls 4000] [--warmup 500] [--via current|future-so]`
 *
 * Null-RPC latency between two libp2p nodes on loopback TCP in this process, a new stream per
 * call: `bare` is a plain request/response handler (`handleRequests`/`sendRequest`), `layer` is
 * the same through the upgrade layer (labels, strict codec, dispatch) with the app object in this
 * thread (`invoke` returns directly). The two alternate call by call, so both see the same
 * machine load. `--via future-so` labels the layer's calls one version ahead, so each goes
 * through a future-SO that calls the current object (one SO hop).
 *
 * Not measured here: calls crossing into an isolated worker host (src/host does not exist yet).
 */
import { createOverlay, handleRequests, sendRequest, type MoltLibp2p } from '../src/overlay/index.ts'
import { createUpgradeLayer, type InvokeRequest } from '../src/layer/index.ts'

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
  try {
    const server = await createOverlay({ system: SYSTEM, profile: 'local', listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(server)
    const client = await createOverlay({ system: SYSTEM, profile: 'local', listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(client)

    // bare: the overlay's plain request/response helper
    const bareProtocol = `/molt/${SYSTEM}/bare/1.0.0`
    const bareReply = new Uint8Array([0xf6]) // a one-byte answer, as a null reply would be
    await handleRequests(server, bareProtocol, async () => bareReply)

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
    let seen = 0
    clientLayer.events.addEventListener('version:seen', () => { seen++ })

    await client.dial(server.getMultiaddrs())
    const peer = server.peerId
    const label = via === 'future-so' ? { version: 2 } : {}

    const bare = async (): Promise<void> => {
      await sendRequest(client, peer, bareProtocol, new Uint8Array([0xa0]))
    }
    const layer = async (): Promise<void> => {
      await clientLayer.call(peer, 'ping', [], label)
    }

    for (let i = 0; i < warmup; i++) {
      await bare()
      await layer()
    }
    const bareNs: number[] = []
    const layerNs: number[] = []
    for (let i = 0; i < calls; i++) {
      // alternate which goes first, so neither always follows the other
      const order = i % 2 === 0 ? [bare, layer] : [layer, bare]
      for (const run of order) {
        const t0 = process.hrtime.bigint()
        await run()
        const dt = Number(process.hrtime.bigint() - t0)
        ;(run === bare ? bareNs : layerNs).push(dt)
      }
    }
    const b = figures(bareNs)
    const l = figures(layerNs)
    await clientLayer.stop()
    await serverLayer.stop()
    return {
      transport: 'tcp loopback, one process, new stream per call',
      via,
      calls,
      warmup,
      bare_p50_us: b.p50,
      bare_p95_us: b.p95,
      bare_p99_us: b.p99,
      bare_mean_us: b.mean,
      layer_p50_us: l.p50,
      layer_p95_us: l.p95,
      layer_p99_us: l.p99,
      layer_mean_us: l.mean,
      ratio_p50: Math.round((l.p50 / b.p50) * 1000) / 1000,
      ratio_p95: Math.round((l.p95 / b.p95) * 1000) / 1000,
      labels_seen: seen,
      isolated: 'not measured: the worker host (src/host) does not exist yet'
    }
  } finally {
    await Promise.allSettled(nodes.map(async n => { await n.stop() }))
  }
}
