/**
 * `npm run bench -- fleetview [--nodes 100] [--group-size 5] [--announce-ms 30000]
 *   [--measure-ms 2×announce] [--sim]`
 *
 * Real nodes (memory transport, local profile, one process), each with a fleet view in a replica
 * group of `group-size`, counting its replicas and two servers elsewhere (pulled). After the views
 * fill, status traffic is measured over `measure-ms`: signed-record payload bytes sent and received
 * per node per second (first copies; gossipsub's control frames and duplicate copies are not in
 * it), and the memory of one view. `--sim` adds the simulator's figure for 1 000, 10 000 and
 * 100 000 nodes with the same group size and period. Target: under 2 KB/s per node at 100 nodes,
 * and the same order at 100 000 (bounded by k, independent of N).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createFleetView, simulate, type NetworkFleetView } from '../src/schedule/index.ts'
import { createMoltNode, type MoltNode } from '../src/node/index.ts'
import { makeGenesis, makeKeys } from '../test/fixtures.ts'
import { memoryAddress } from '../test/helpers.ts'
import type { Benchmark } from './run.ts'

const bench: Benchmark = async (flags) => {
  const n = Number(flags.nodes ?? 100)
  const groupSize = Number(flags['group-size'] ?? 5)
  const announceMs = Number(flags['announce-ms'] ?? 30_000)
  const measureMs = Number(flags['measure-ms'] ?? 2 * announceMs)
  const genesis = await makeGenesis(await makeKeys(), 'fleet')
  const nodes: MoltNode[] = []
  const views: NetworkFleetView[] = []
  try {
    for (let i = 0; i < n; i++) {
      const privateKey = await generateKeyPair('Ed25519')
      const node = await createMoltNode({ genesis, profile: 'local', listen: [memoryAddress()], fetchBundles: false, privateKey })
      nodes.push(node)
      const g = Math.floor(i / groupSize)
      // a full mesh within the group, and a link to the previous group
      for (let j = g * groupSize; j < i; j++) await node.libp2p.dial(nodes[j]!.libp2p.getMultiaddrs())
      if (i === g * groupSize && i > 0) await node.libp2p.dial(nodes[i - 1]!.libp2p.getMultiaddrs())
      ;(node as MoltNode & { key?: typeof privateKey }).key = privateKey
    }
    for (let i = 0; i < n; i++) {
      const g = Math.floor(i / groupSize)
      const replicas = nodes.slice(g * groupSize, Math.min(n, (g + 1) * groupSize)).filter((_, k) => k + g * groupSize !== i).map(x => x.peerId.toString())
      const servers = [nodes[(i + groupSize) % n]!, nodes[(i + 2 * groupSize + 1) % n]!].filter(s => s !== nodes[i]).map(s => s.peerId.toString())
      const node = nodes[i]!
      const view = createFleetView({ libp2p: node.libp2p, privateKey: (node as MoltNode & { key: never }).key }, {
        system: 'fleet', class: 'app', tags: { group: `g${g}` }, replicas, servers, announceMs
      })
      await view.start()
      views.push(view)
    }
    process.stderr.write(`${n} nodes and views started at ${Math.round(performance.now())} ms; filling views\n`)
    const fillUntil = performance.now() + 3 * announceMs
    while (performance.now() < fillUntil && !views.every(v => v.counted().replicas.every(r => v.get(r) != null))) {
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    const before = views.map(v => v.traffic())
    const t0 = performance.now()
    await new Promise(resolve => setTimeout(resolve, measureMs))
    const seconds = (performance.now() - t0) / 1000
    let bytes = 0
    views.forEach((v, i) => { const t = v.traffic(); bytes += (t.sent - before[i]!.sent) + (t.received - before[i]!.received) })
    const entries = views.map(v => v.entries())
    const viewBytes = Math.max(...entries.map(e => JSON.stringify(e).length + e.length * 96))
    const figures: Record<string, unknown> = {
      nodes: n,
      announce_ms: announceMs,
      bytes_per_node_s: Math.round(bytes / n / seconds),
      view_kb: Math.round(viewBytes / 102.4) / 10,
      view_entries_max: Math.max(...entries.map(e => e.length))
    }
    if (flags.sim === true) {
      for (const sn of [1000, 10_000, 100_000]) {
        const r = simulate({ nodes: sn, schedule: 'eager', groupSize, contacts: 2, announceMs, crashesPerNodeHour: 0 })
        figures[`sim_${sn}_bytes_per_node_s`] = r.statusBytesPerNodeS
        figures[`sim_${sn}_view_kb`] = r.viewKb
      }
    }
    return figures
  } finally {
    await Promise.allSettled(views.map(async v => { await v.stop() }))
    await Promise.allSettled(nodes.map(async node => { await node.stop() }))
  }
}

export default bench
