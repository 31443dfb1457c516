import { describe, it, expect, afterEach } from 'vitest'
import { BundleNotFoundError } from '../../src/bundle/index.ts'
import { bundleNode, connect, randomFiles, sameFiles, storedBlocks, type TestNode } from './setup.ts'

describe('bundle gc', () => {
  const nodes: TestNode[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
  })

  it('never drops a pinned, kept, recent or fetching bundle, and drops the rest', async () => {
    const node = await bundleNode()
    nodes.push(node)
    const shared = randomFiles(1, 300_000).get('index.js')!
    const filesA = new Map([...randomFiles(2, 300_000)].map(([p, b]) => [p === 'index.js' ? 'shared.js' : p, b]))
    filesA.set('shared.js', shared)
    const filesD = new Map([['shared.js', shared], ['d.js', new Uint8Array(1000).fill(4)]])
    const a = await node.bundles.packFiles(filesA) // pinned (e.g. the current version)
    const b = await node.bundles.packFiles(randomFiles(2, 300_000)) // kept (e.g. a live past-SO)
    const c = await node.bundles.packFiles(randomFiles(2, 300_000)) // unneeded
    const d = await node.bundles.packFiles(filesD) // unneeded, shares a file with a
    const e = await node.bundles.packFiles(randomFiles(1, 10_000)) // the newest: kept for catching-up peers
    await node.bundles.pin(a.cid)

    const result = await node.bundles.gc({ keep: [b.cid], keepRecent: 1 })
    expect(result.removedBundles.map(c => c.toString()).sort()).toEqual([c.cid, d.cid].map(c => c.toString()).sort())
    expect(result.removedBlocks).toBeGreaterThan(0)
    for (const kept of [a, b, e]) {
      expect(await node.bundles.has(kept.cid)).toBe(true)
      await node.bundles.files(kept.cid)
    }
    expect(sameFiles(await node.bundles.files(a.cid), filesA)).toBe(true)
    for (const dropped of [c, d]) {
      expect(await node.bundles.has(dropped.cid)).toBe(false)
      await expect(node.bundles.files(dropped.cid)).rejects.toThrow(BundleNotFoundError)
    }
    // what is left is exactly the kept bundles' blocks
    const left = await storedBlocks(node.datastore)
    expect(left.bytes).toBe(a.size + b.size + e.size)

    // unpinned and not kept: the next gc drops it
    await node.bundles.unpin(a.cid)
    await node.bundles.gc({ keep: [b.cid], keepRecent: 1 })
    expect(await node.bundles.has(a.cid)).toBe(false)
    expect(await node.bundles.has(b.cid)).toBe(true)
    expect((await storedBlocks(node.datastore)).bytes).toBe(b.size + e.size)
  })

  it('keeps the blocks of a bundle being fetched', async () => {
    const publisher = await bundleNode()
    nodes.push(publisher)
    const packed = await publisher.bundles.packFiles(randomFiles(2, 1_500_000))
    const fetcher = await bundleNode({ concurrency: 1, batchBlocks: 1 })
    nodes.push(fetcher)
    await connect(fetcher, publisher)
    let collected: Promise<unknown> | undefined
    fetcher.bundles.events.addEventListener('bundle:progress', (event) => {
      if (collected == null && event.detail.bytes > 0 && event.detail.bytes < event.detail.total) {
        collected = fetcher.bundles.gc({ keep: [], keepRecent: 0 })
      }
    })
    const result = await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    await collected
    expect(collected).toBeDefined()
    expect(result.size).toBe(packed.size)
    expect((await storedBlocks(fetcher.datastore)).bytes).toBe(packed.size)
    await fetcher.bundles.files(packed.cid)
  })
})
