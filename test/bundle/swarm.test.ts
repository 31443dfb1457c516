import { createHash } from 'node:crypto'
import { describe, it, expect, afterEach } from 'vitest'
import { encodeFile } from '../../src/bundle/format.ts'
import { bundleNode, connect, randomFiles, type TestNode } from './setup.ts'

function digestOf (files: Map<string, Uint8Array>): string {
  const hash = createHash('sha256')
  for (const path of [...files.keys()].sort()) {
    hash.update(path).update(files.get(path)!)
  }
  return hash.digest('hex')
}

describe('bundle distribution', () => {
  const nodes: TestNode[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
  })

  it('a 9 MB bundle reaches 20 nodes, each holds a verified copy and serves it; a one-file change moves only that file', async () => {
    const count = 20
    for (let i = 0; i < count; i++) {
      const node = await bundleNode()
      nodes.push(node)
      if (i > 0) {
        await connect(node, nodes[i - 1]!)
        if (i > 2) await connect(node, nodes[Math.floor(Math.random() * (i - 1))]!)
      }
    }
    const [publisher, ...fetchers] = nodes as [TestNode, ...TestNode[]]
    const files = randomFiles(9, 9 * 1024 * 1024)
    const expected = digestOf(files)
    const v1 = await publisher.bundles.packFiles(files)
    const results = await Promise.all(fetchers.map(async n => await n.bundles.fetch(v1.cid, { declaredSize: v1.size })))
    for (const [i, node] of fetchers.entries()) {
      expect(results[i]!.size).toBe(v1.size)
      expect(await node.bundles.has(v1.cid)).toBe(true)
      expect(digestOf(await node.bundles.files(v1.cid))).toBe(expected)
    }
    const served = nodes.map(n => n.bundles.stats().servedBytes)
    const total = served.reduce((a, b) => a + b, 0)
    // each fetcher read each block once; servers may have sent a little more (replies that
    // arrived after the fetcher had given up on a slow request)
    const fetched = results.reduce((a, r) => a + r.fetchedBytes, 0)
    expect(fetched).toBe(v1.size * fetchers.length)
    expect(total).toBeGreaterThanOrEqual(fetched)
    // peers other than the publisher served part of it
    expect(served.slice(1).some(s => s > 0)).toBe(true)
    console.log(`9 MB to ${count - 1} fetchers: ${fetched} bytes fetched, ${total} served, publisher served ${(served[0]! / total * 100).toFixed(1)}%`)

    // every fetcher serves its copy: with the publisher gone, a newcomer fetches from one of them
    await publisher.stop()
    const newcomer = await bundleNode()
    nodes.push(newcomer)
    await connect(newcomer, fetchers[7]!)
    const late = await newcomer.bundles.fetch(v1.cid, { declaredSize: v1.size })
    expect(digestOf(await newcomer.bundles.files(v1.cid))).toBe(expected)
    expect(late.fromPeers[publisher.libp2p.peerId.toString()]).toBeUndefined()

    // version 2 changes one file: only its chunks, its file node and the new root move
    const changedPath = 'lib/module-3.js'
    const changed = new Map(files)
    changed.set(changedPath, files.get(changedPath)!.map(b => b ^ 0xff))
    const publisher2 = fetchers[0]!
    const v2 = await publisher2.bundles.packFiles(changed)
    const { node: fileNode, chunks } = await encodeFile(changed.get(changedPath)!)
    const expectedBytes = chunks.reduce((a, c) => a + c.bytes.byteLength, 0) + fileNode.bytes.byteLength + (await rootBlock(publisher2, v2.cid)).byteLength
    const results2 = await Promise.all([...fetchers.slice(1), newcomer].map(async n => await n.bundles.fetch(v2.cid, { declaredSize: v2.size })))
    for (const r of results2) {
      expect(r.fetchedBytes).toBe(expectedBytes)
    }
    for (const n of [...fetchers.slice(1), newcomer]) {
      expect(digestOf(await n.bundles.files(v2.cid))).toBe(digestOf(changed))
    }
    const moved = results2.reduce((a, r) => a + r.fetchedBytes, 0)
    console.log(`version 2 (one file of ${changed.get(changedPath)!.byteLength} bytes changed): ${moved} bytes moved to ${results2.length} nodes, ${expectedBytes} each (bundle is ${v2.size})`)
    expect(expectedBytes).toBeLessThan(v2.size / 4)
  }, 240_000)
})

async function rootBlock (node: TestNode, cid: import('multiformats/cid').CID): Promise<Uint8Array> {
  const { Key } = await import('interface-datastore')
  const { base32 } = await import('multiformats/bases/base32')
  return await node.datastore.get(new Key(`/blocks/${base32.baseEncode(cid.multihash.bytes)}`))
}
