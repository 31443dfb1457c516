/**
 * Chained past-SOs and the minimum supported version, across three real nodes in mixed mode
 * (HotOS'03 §5: "a chain of past SOs can support many old versions"; DESIGN: calls below the
 * minimum supported version fail `VersionRetired`).
 *
 * molt's genesis is version 0, so the node "at v3" here is at version 3 after three upgrades
 * (fixtures kv-v0 … kv-v3, each renaming the methods), and its "v1 caller" is a node really
 * running version 1: its calls cross the past-SO of version 1 (shipped in kv-v2) and then the
 * past-SO of version 2 (shipped in kv-v3) before reaching the version-3 object. A version-0
 * caller crosses three.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createControl, createManifest, signControl, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app } from './apps.ts'

/** A node's schedule: "upgrade now" to any version up to `limit` (or give up when the node stops). */
function ceiling (limit: number): (context: { manifest: { body: { version: number } }, signal: AbortSignal }) => Promise<void> {
  return async ({ manifest, signal }) => {
    if (manifest.body.version <= limit) return
    await new Promise<never>((_resolve, reject) => {
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
    })
  }
}

describe('chained past-SOs', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('a version-3 node serves version-1 and version-0 callers through chained past-SOs; after retirement they fail VersionRetired', async () => {
    const keys = await makeKeys()
    const signers = keys.release.slice(0, 2)
    const kv0 = await app('kv-v0')
    const v0 = await buildBundle(kv0)
    const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: 'kv', bundle: v0.root, bundleSize: v0.size }], createdAt: 1 }
    // a goes all the way to version 3, b stops at 1, c stays at 0
    const limits = [3, 1, 0]
    for (let i = 0; i < 3; i++) {
      nodes.push(await startNode(genesis, {
        fetchBundles: true,
        pack: i === 0 ? [kv0] : [],
        bootstrap: i === 0 ? [] : nodes[0]!.libp2p.getMultiaddrs().map(String),
        app: { class: 'kv', schedule: ceiling(limits[i]!), manager: { retryMs: 100 } }
      }))
    }
    const [a, b, c] = nodes as [MoltNode, MoltNode, MoltNode]
    await c.libp2p.dial(b.libp2p.getMultiaddrs())
    expect(await c.app!.layer.call(a.peerId, 'put', ['genesis', 'written at version 0'])).toBe(true)

    for (const version of [1, 2, 3]) {
      const packed = await a.bundles.packFiles(await app(`kv-v${version}`))
      let manifest = await createManifest({
        system: 'test', version, previous: a.head().cid, createdAt: 1 + version,
        classUpgrades: [{ oldClass: 'kv', newClass: 'kv', bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'gated' } }]
      })
      for (const k of signers) manifest = await signManifest(manifest, k)
      await a.publish(manifest)
      await eventually(() => a.app!.manager.current.version === version && a.app!.manager.phase == null, `a at version ${version}`, 30_000)
    }
    await eventually(() => b.app!.manager.current.version === 1 && b.app!.manager.phase?.phase === 'waiting', 'b at version 1, held before 2', 30_000)
    await eventually(() => c.app!.manager.current.version === 0 && c.app!.manager.phase?.phase === 'waiting', 'c at version 0, held before 1', 30_000)

    // a runs version 3 with one past-SO per older version, newest first
    expect(a.app!.host.status()).toMatchObject({ version: 3, past: [[2, 2], [1, 1], [0, 0]] })
    expect(a.app!.manager.serving()).toMatchObject({ version: 3, past: [0, 1, 2], minimumVersion: 0 })

    // b's calls are labelled 1: read/write exist only at version 1, so they reach the version-3
    // object through past@1 (read → lookup) and past@2 (lookup → getValue)
    expect(await b.app!.layer.call(a.peerId, 'read', ['genesis'])).toBe('written at version 0')
    expect(await b.app!.layer.call(a.peerId, 'write', ['from-v1', 'written by a version-1 caller'])).toBe(true)
    expect(await a.app!.layer.call(a.peerId, 'getValue', ['from-v1'])).toEqual({ value: 'written by a version-1 caller' })
    expect(await a.app!.layer.call(a.peerId, 'setValue', [{ key: 'from-v3', value: 'written at version 3' }])).toBe(true)
    expect(await b.app!.layer.call(a.peerId, 'read', ['from-v3'])).toBe('written at version 3')
    // a version-1 method is not a version-3 one, nor the other way round
    await expect(b.app!.layer.call(a.peerId, 'getValue', ['from-v3'])).rejects.toMatchObject({ remoteName: 'MethodNotFoundError' })
    await expect(a.app!.layer.call(a.peerId, 'read', ['from-v3'])).rejects.toMatchObject({ remoteName: 'MethodNotFoundError' })
    // c's calls are labelled 0 and cross three past-SOs
    expect(await c.app!.layer.call(a.peerId, 'get', ['from-v1'])).toBe('written by a version-1 caller')
    expect(await c.app!.layer.call(a.peerId, 'put', ['from-v0', 'written by a version-0 caller'])).toBe(true)
    expect(await b.app!.layer.call(a.peerId, 'read', ['from-v0'])).toBe('written by a version-0 caller')
    // a version-2 label crosses one
    expect(await b.app!.layer.call(a.peerId, 'lookup', ['from-v0'], { version: 2, class: 'kv' })).toBe('written by a version-0 caller')
    // b, at version 1 with the future-SO of 2, answers version-2 callers too
    expect(b.app!.manager.serving().future).toEqual([2])
    expect(await a.app!.layer.call(b.peerId, 'set', ['on-b', 'via the future-SO'], { version: 2, class: 'kv' })).toBe(true)
    expect(await c.app!.layer.call(b.peerId, 'get', ['on-b'])).toBe('via the future-SO')

    // the minimum supported version rises to 2: versions 0 and 1 are retired everywhere
    let retire = await createControl({ system: 'test', seq: 1, scope: 3, action: { type: 'retire', minimumVersion: 2 }, createdAt: 10 })
    for (const k of signers) retire = await signControl(retire, k)
    expect(await a.publishControl(retire)).toBe('accepted')
    await eventually(() => a.app!.host.status().state === 'running' && a.app!.host.status().past.length === 1, 'a reloaded with only the past-SO of version 2', 30_000)
    expect(a.app!.host.status()).toMatchObject({ version: 3, past: [[2, 2]] })
    // labelled explicitly: b and c are catching up meanwhile (below)
    const asV1 = { version: 1, class: 'kv' }
    const asV0 = { version: 0, class: 'kv' }
    await expect(b.app!.layer.call(a.peerId, 'read', ['from-v3'], asV1)).rejects.toMatchObject({ name: 'VersionRetiredError' })
    await expect(b.app!.layer.call(a.peerId, 'write', ['late', 'refused'], asV1)).rejects.toMatchObject({ name: 'VersionRetiredError' })
    await expect(c.app!.layer.call(a.peerId, 'get', ['from-v0'], asV0)).rejects.toMatchObject({ name: 'VersionRetiredError' })
    // b and c ran retired versions: nobody could be called by them any more, so they go straight
    // through to the minimum without their schedules, which still hold them before version 3
    await eventually(() => b.app!.manager.current.version === 2 && c.app!.manager.current.version === 2 && b.app!.manager.phase?.phase === 'waiting' && c.app!.manager.phase?.phase === 'waiting', 'b and c caught up to version 2 and wait for 3', 30_000)
    expect((await c.app!.manager.history()).filter(h => h.event === 'upgraded').map(h => h.to)).toEqual([1, 2])
    expect(c.app!.rollout()).toMatchObject({ version: 3, schedule: 'custom', state: 'waiting' })
    // the future-SO's state reached version 2 through the TF; nothing was lost
    expect(await a.app!.layer.call(b.peerId, 'lookup', ['on-b'], { version: 2, class: 'kv' })).toBe('via the future-SO')
    expect(await b.app!.layer.call(a.peerId, 'lookup', ['from-v1'])).toBe('written by a version-1 caller')
    expect(await a.app!.layer.call(a.peerId, 'getValue', ['late'])).toEqual({ value: null })
    expect(await a.app!.layer.call(a.peerId, 'getValue', ['genesis'])).toEqual({ value: 'written at version 0' })
  })
})
