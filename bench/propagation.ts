/**
 * `npm run bench -- propagation [--nodes 100] [--cold] [--transport tcp|memory] [--settle-ms 8000]`
 *
 * Time from the publish call to acceptance at each node. In the same run, plain gossipsub
 * publishes bytes of the same size on its own topic from the same node: `raw_gossip_p99_ms` is the
 * baseline molt's validator, chain and catch-up add to. Warm: the mesh settles first. `--cold`:
 * publish 1 s after every node was started and dialled.
 */
import { createMoltNode, type MoltNode } from '../src/node/index.ts'
import { seededRandom } from '../src/schedule/index.ts'
import { buildChain, makeGenesis, makeKeys } from '../test/fixtures.ts'
import { memoryAddress } from '../test/helpers.ts'
import type { Benchmark } from './run.ts'

function quantile (sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number
}

const round = (x: number): number => Math.round(x * 10) / 10


const bench: Benchmark = async (flags) => {
  const n = Number(flags.nodes ?? 100)
  const cold = flags.cold === true
  const transport = String(flags.transport ?? 'tcp')
  const settleMs = cold ? 1000 : Number(flags['settle-ms'] ?? 8000)
  if (!Number.isInteger(n) || n < 2) throw new Error('--nodes: an integer ≥ 2')
  if (transport !== 'tcp' && transport !== 'memory') throw new Error('--transport: tcp or memory')

  const keys = await makeKeys()
  const genesis = await makeGenesis(keys, 'bench')
  const [manifest] = await buildChain(genesis, keys.release.slice(0, 2), 1)
  const nodes: MoltNode[] = []
  // seeded, so every run builds the same topology
  const random = seededRandom(Number(flags.seed ?? 1), 'propagation-topology')
  const rawTopic = '/bench/raw/1'
  try {
    for (let i = 0; i < n; i++) {
      const node = await createMoltNode({
        genesis,
        profile: 'local',
        listen: [transport === 'tcp' ? '/ip4/127.0.0.1/tcp/0' : memoryAddress()],
        fetchBundles: false
      })
      node.libp2p.services.pubsub.subscribe(rawTopic)
      // each node dials up to 4 earlier ones, as DESIGN.md's measurement did
      const targets = new Set<number>()
      while (targets.size < Math.min(4, i)) targets.add(Math.floor(random() * i))
      await Promise.all([...targets].map(async t => { await node.libp2p.dial(nodes[t]!.libp2p.getMultiaddrs()) }))
      nodes.push(node)
      if ((i + 1) % 10 === 0) process.stderr.write(`started ${i + 1}/${n} nodes at ${Math.round(performance.now())} ms, ${node.libp2p.getConnections().length} connections on the last\n`)
    }
    await new Promise(resolve => setTimeout(resolve, settleMs))
    process.stderr.write('publishing\n')

    const injector = nodes[Math.floor(n / 2)]!
    const rawAt = new Map<string, number>()
    const acceptedAt = new Map<string, number>()
    for (const node of nodes) {
      node.libp2p.services.pubsub.addEventListener('message', (e) => {
        if (e.detail.topic === rawTopic) rawAt.set(node.peerId.toString(), performance.now())
      })
      node.addEventListener('manifest:accepted', () => { acceptedAt.set(node.peerId.toString(), performance.now()) })
    }
    const waitFor = async (map: Map<string, number>, deadline: number): Promise<void> => {
      while (map.size < n - 1 && performance.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    }

    // the molt publish, then the raw baseline once the first has quiesced
    const t0 = performance.now()
    await injector.publish(manifest!)
    await waitFor(acceptedAt, t0 + 30_000)
    acceptedAt.delete(injector.peerId.toString())
    await new Promise(resolve => setTimeout(resolve, 500))
    const t1 = performance.now()
    await injector.libp2p.services.pubsub.publish(rawTopic, new Uint8Array(manifest!.bodyBytes.length + 200).fill(1))
    await waitFor(rawAt, t1 + 30_000)

    const molt = [...acceptedAt.values()].map(t => t - t0).sort((a, b) => a - b)
    const raw = [...rawAt.values()].map(t => t - t1).sort((a, b) => a - b)
    const rss = process.memoryUsage().rss / 1024 / 1024
    return {
      nodes: n,
      cold,
      transport,
      reached: molt.length + 1,
      p50_ms: round(quantile(molt, 0.5)),
      p99_ms: round(quantile(molt, 0.99)),
      max_ms: round(molt.at(-1) ?? NaN),
      raw_gossip_reached: raw.length + 1,
      raw_gossip_p50_ms: round(quantile(raw, 0.5)),
      raw_gossip_p99_ms: round(quantile(raw, 0.99)),
      rss_mb_per_node: round(rss / n)
    }
  } finally {
    await Promise.allSettled(nodes.map(async node => { await node.stop() }))
  }
}

export default bench
