/**
 * `npm run bench -- distribution --nodes 50 --size 9MB`: N nodes in one process (memory
 * transport, local profile), each dialling two earlier ones. Node 0 packs a bundle of the given
 * size; every other node is told the CID at the same moment (as when it accepts the manifest)
 * and fetches it. Reports the time until all hold a verified copy and the share of all bytes
 * served that the publisher served. Optional tuning flags: `--files`, `--concurrency`, `--batch`,
 * `--serving` (the service options of the same names).
 */
import { randomBytes } from 'node:crypto'
import { MemoryDatastore } from 'datastore-core'
import { createBundleService, type BundleService } from '../src/bundle/index.ts'
import { createOverlay, type MoltLibp2p } from '../src/overlay/index.ts'

function parseSize (value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB)?$/i.exec(value.trim())
  if (m == null) {
    throw new Error(`--size: cannot parse ${JSON.stringify(value)} (e.g. 9MB)`)
  }
  const unit = (m[2] ?? 'B').toLowerCase()
  const factor = unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : unit.startsWith('g') ? 1024 ** 3 : 1
  return Math.round(Number(m[1]) * factor)
}

export default async function distribution (flags: Record<string, string | boolean | undefined>): Promise<Record<string, unknown>> {
  const count = Number(flags.nodes ?? 50)
  const size = parseSize(String(flags.size ?? '9MB'))
  const fileCount = Number(flags.files ?? 9)
  const system = 'bench'
  const nodes: Array<{ libp2p: MoltLibp2p, bundles: BundleService }> = []
  try {
    for (let i = 0; i < count; i++) {
      const libp2p = await createOverlay({ system, profile: 'local', listen: [`/memory/bench-distribution-${process.pid}-${i}`] })
      const bundles = createBundleService({ libp2p, datastore: new MemoryDatastore() }, {
        system,
        ...(flags.concurrency != null ? { concurrency: Number(flags.concurrency) } : {}),
        ...(flags.batch != null ? { batchBlocks: Number(flags.batch) } : {}),
        ...(flags.serving != null ? { maxServing: Number(flags.serving) } : {})
      })
      await bundles.start()
      nodes.push({ libp2p, bundles })
      if (i > 0) {
        await libp2p.dial(nodes[i - 1]!.libp2p.getMultiaddrs())
        if (i > 2) {
          await libp2p.dial(nodes[Math.floor(Math.random() * (i - 1))]!.libp2p.getMultiaddrs())
        }
      }
    }
    // let identify and the DHT routing tables settle
    await new Promise(resolve => setTimeout(resolve, 2000))

    const files = new Map<string, Uint8Array>()
    const each = Math.floor(size / fileCount)
    for (let i = 0; i < fileCount; i++) {
      files.set(`mod-${i}.js`, new Uint8Array(randomBytes(i === fileCount - 1 ? size - each * (fileCount - 1) : each)))
    }
    const publisher = nodes[0]!
    const packed = await publisher.bundles.packFiles(files)

    const start = performance.now()
    const times = await Promise.all(nodes.slice(1).map(async n => {
      await n.bundles.fetch(packed.cid, { declaredSize: packed.size })
      return performance.now() - start
    }))
    const allMs = performance.now() - start
    times.sort((a, b) => a - b)
    const served = nodes.map(n => n.bundles.stats().servedBytes)
    const totalServed = served.reduce((a, b) => a + b, 0)
    const fetched = nodes.reduce((a, n) => a + n.bundles.stats().fetchedBytes, 0)
    return {
      nodes: count,
      bytes: packed.size,
      all_ms: Math.round(allMs),
      p50_ms: Math.round(times[Math.floor(times.length / 2)] ?? 0),
      publisher_share: Number((served[0]! / totalServed).toFixed(3)),
      bytes_fetched: fetched,
      bytes_served: totalServed
    }
  } finally {
    await Promise.allSettled(nodes.map(async n => {
      await n.bundles.stop()
      await n.libp2p.stop()
    }))
  }
}
