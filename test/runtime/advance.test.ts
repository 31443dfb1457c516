/**
 * A class that a manifest does not name only advances its version number (DESIGN: "nodes whose
 * class no class upgrade names just advance their version number"): it keeps running the same
 * object on the same state, answers calls labelled with the new version and the old, and keeps
 * its state across a restart.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app } from './apps.ts'

describe('a class no manifest names', () => {
  const nodes: MoltNode[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await stopAll(nodes)
    await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
  })

  it('advances: same object, same state, old and new labels answered, and the state survives a restart', async () => {
    const keys = await makeKeys()
    const kv = await app('kv-v0')
    const sf = await app('sf-v0')
    const [kvRoot, sfRoot] = [await buildBundle(kv), await buildBundle(sf)]
    const genesis: GenesisConfig = {
      system: 'test',
      policy: policyOf(keys),
      classes: [{ name: 'kv', bundle: kvRoot.root, bundleSize: kvRoot.size }, { name: 'sf', bundle: sfRoot.root, bundleSize: sfRoot.size }],
      createdAt: 1
    }
    const dataDir = await mkdtemp(join(tmpdir(), 'molt-advance-'))
    dirs.push(dataDir)
    const s = await startNode(genesis, { pack: [kv, sf], app: { class: 'sf', manager: { retryMs: 100 } } })
    nodes.push(s)
    const options = { dataDir, fetchBundles: true, bootstrap: s.libp2p.getMultiaddrs().map(String), app: { class: 'kv', manager: { retryMs: 100 } } }
    let k = await startNode(genesis, options)
    nodes.push(k)
    expect(await s.app!.layer.call(k.peerId, 'put', ['key', 'written at version 0'])).toBe(true)

    // version 1 upgrades sf only: k advances
    const packed = await s.bundles.packFiles(await app('sf-v1'))
    let manifest = await createManifest({
      system: 'test', version: 1, previous: s.head().cid, createdAt: 2,
      classUpgrades: [{ oldClass: 'sf', newClass: 'sf', bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'eager' } }]
    })
    for (const key of keys.release.slice(0, 2)) manifest = await signManifest(manifest, key)
    await s.publish(manifest)
    await eventually(() => s.app!.manager.current.version === 1 && k.app!.manager.current.version === 1, 'sf upgraded, kv advanced', 30_000)
    expect((await k.app!.manager.history()).map(h => h.event)).toEqual(['advanced'])

    // s's calls are labelled 1 now; an old caller's label 0 is answered by the same object
    expect(await s.app!.layer.call(k.peerId, 'get', ['key'])).toBe('written at version 0')
    expect(await s.app!.layer.call(k.peerId, 'get', ['key'], { version: 0, class: 'sf' })).toBe('written at version 0')
    expect(await s.app!.layer.call(k.peerId, 'put', ['after', 'written at version 1'])).toBe(true)

    // a restart loads the object at version 1 on the state it has always used
    await k.stop()
    nodes.splice(nodes.indexOf(k), 1)
    k = await startNode(genesis, options)
    nodes.push(k)
    expect(k.app!.manager.current.version).toBe(1)
    expect(await s.app!.layer.call(k.peerId, 'get', ['key'])).toBe('written at version 0')
    expect(await s.app!.layer.call(k.peerId, 'get', ['after'])).toBe('written at version 1')
  })
})
