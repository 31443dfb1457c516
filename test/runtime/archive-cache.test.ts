/**
 * HotOS'03 §7.1, Archive → Cache, across three real nodes in mixed mode: each node runs its app in
 * an isolated worker behind the upgrade layer, and its upgrade manager follows the chain.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app, gate } from './apps.ts'

describe('Archive → Cache in mixed mode', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('a v1 remove on a v0 node fails SimulationRefused; adds and lookups cross versions both ways; the TF keeps every item', async () => {
    const keys = await makeKeys()
    const archive = await app('archive-v0')
    const cache = await app('cache-v1')
    const v0 = await buildBundle(archive)
    const genesis: GenesisConfig = {
      system: 'test',
      policy: policyOf(keys),
      classes: [{ name: 'archive', bundle: v0.root, bundleSize: v0.size }],
      createdAt: 1
    }
    const gates = [gate(), gate(), gate()]
    for (let i = 0; i < 3; i++) {
      const node = await startNode(genesis, {
        fetchBundles: true,
        pack: i === 0 ? [archive] : [],
        bootstrap: i === 0 ? [] : nodes[0]!.libp2p.getMultiaddrs().map(String),
        app: { class: 'archive', schedule: async () => { await gates[i]!.wait() }, manager: { retryMs: 100 } }
      })
      nodes.push(node)
    }
    const [a, b, c] = nodes as [MoltNode, MoltNode, MoltNode]
    await c.libp2p.dial(b.libp2p.getMultiaddrs())

    // every node serves version 0; an item added before the upgrade
    expect(await a.app!.layer.call(c.peerId, 'add', ['before'])).toBe(true)

    // version 1: the cache, injected through a
    const packed = await a.bundles.packFiles(cache)
    let manifest = await createManifest({
      system: 'test',
      version: 1,
      previous: a.head().cid,
      classUpgrades: [{ oldClass: 'archive', newClass: 'archive', bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'gated' } }],
      createdAt: 2
    })
    for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
    await a.publish(manifest)

    // a and b upgrade; c stays at 0 with the future-SO of 1 installed
    gates[0]!.open()
    gates[1]!.open()
    await eventually(() => a.app!.manager.current.version === 1 && b.app!.manager.current.version === 1, 'a and b at version 1', 30_000)
    await eventually(() => c.app!.manager.phase?.phase === 'waiting', 'c waits with the future-SO installed', 30_000)
    expect(c.app!.manager.current.version).toBe(0)
    expect(c.app!.manager.serving().future).toEqual([1])

    // a v1 caller's remove on the v0 node is refused by its future-SO
    await expect(a.app!.layer.call(c.peerId, 'remove', ['before'])).rejects.toMatchObject({ name: 'SimulationRefusedError' })
    expect(await c.app!.layer.call(c.peerId, 'has', ['before'])).toBe(true)

    // v1 callers' adds through c's future-SO are seen by v0 callers (c itself is one)
    expect(await a.app!.layer.call(c.peerId, 'add', ['from-v1'])).toBe(true)
    expect(await c.app!.layer.call(c.peerId, 'has', ['from-v1'])).toBe(true)
    // and v0 callers' adds on a v1 node (through its past-SO) are seen by v1 callers
    expect(await c.app!.layer.call(b.peerId, 'add', ['from-v0'])).toBe(true)
    expect(await a.app!.layer.call(b.peerId, 'has', ['from-v0'])).toBe(true)
    expect((await a.app!.layer.call(c.peerId, 'list', [])) as string[]).toEqual(expect.arrayContaining(['before', 'from-v1']))
    // v1 callers can remove on v1 nodes
    expect(await a.app!.layer.call(b.peerId, 'remove', ['from-v0'])).toBe(true)
    expect(await c.app!.layer.call(b.peerId, 'has', ['from-v0'])).toBe(false)

    // c upgrades: its TF carries every item, and remove now works there
    gates[2]!.open()
    await eventually(() => c.app!.manager.current.version === 1, 'c at version 1', 30_000)
    expect(((await a.app!.layer.call(c.peerId, 'list', [])) as string[]).sort()).toEqual(['before', 'from-v1'])
    expect(await a.app!.layer.call(c.peerId, 'remove', ['before'])).toBe(true)
    expect(await a.app!.layer.call(c.peerId, 'has', ['before'])).toBe(false)
    expect((await c.app!.manager.history()).map(h => h.event)).toEqual(['upgraded'])
  })
})
