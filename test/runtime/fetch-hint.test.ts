/**
 * A node's upgrade fetches the new bundle first from the peer that passed the manifest on, and
 * walks the DHT only when no block comes: at a publish the whole fleet fetches at once, and a walk
 * costs every node it touches.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { PeerId } from '@libp2p/interface'
import { app } from './apps.ts'

describe('the bundle of an accepted manifest', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  // fetchBundles: the node fetches every announced bundle itself at once (the default), or only
  // its own class's, when its upgrade manager gets to it
  it.each([false, true])('is asked of the peer that passed the manifest on, which gets it only later, with no DHT walk meanwhile (fetchBundles: %s)', async (fetchBundles) => {
    const keys = await makeKeys()
    const archive = await app('archive-v0')
    const v0 = await buildBundle(archive)
    const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: 'archive', bundle: v0.root, bundleSize: v0.size }], createdAt: 1 }

    // a publishes and holds the new bundle; b relays gossip and holds nothing yet; c runs the app
    // and may not connect to a, so the new bundle can reach c only through b
    const a = await startNode(genesis)
    nodes.push(a)
    const b = await startNode(genesis, { bootstrap: a.libp2p.getMultiaddrs().map(String) })
    nodes.push(b)
    const isA = (peer: PeerId): boolean => peer.equals(a.peerId)
    const c = await startNode(genesis, {
      bootstrap: b.libp2p.getMultiaddrs().map(String),
      connectionGater: { denyDialPeer: async (peer: PeerId) => isA(peer), denyInboundEncryptedConnection: async (peer: PeerId) => isA(peer) },
      fetchBundles,
      pack: [archive],
      app: { class: 'archive', manager: { retryMs: 100 } }
    })
    nodes.push(c)
    await eventually(() => c.libp2p.getConnections(b.peerId).length > 0, 'c connected to b')

    const cache = await app('cache-v1')
    const packed = await a.bundles.packFiles(cache)
    let manifest = await createManifest({
      system: 'test', version: 1, previous: a.head().cid, createdAt: 2,
      classUpgrades: [{ oldClass: 'archive', newClass: 'archive', bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'eager' } }]
    })
    for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
    const fetchedFrom: string[] = []
    c.addEventListener('bundle:fetched', (e) => { fetchedFrom.push(...Object.keys(e.detail.fromPeers)) })
    await a.publish(manifest)
    await eventually(() => c.head().body.version === 1, 'c accepted version 1 (from b, its only peer)')

    // past the fetch's first discovery check (1 s): without the hint c, knowing no holder, walks
    // the DHT there; with it, c keeps asking b
    await new Promise(resolve => setTimeout(resolve, 2000))
    expect(await c.bundles.has(packed.cid)).toBe(false)
    const again = await b.bundles.packFiles(cache)
    expect(again.cid.equals(packed.cid)).toBe(true)

    await eventually(() => c.app!.manager.current.version === 1, 'c upgraded to version 1', 30_000)
    expect(fetchedFrom).toEqual([b.peerId.toString()])
    expect(c.bundles.stats().providerQueries).toBe(0)
  })
})
