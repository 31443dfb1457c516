/**
 * Rollout control acting on real nodes that run an app: pause holds an upgrade, resume releases
 * it, retire makes old calls fail VersionRetired and drops the past-SOs that served them.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createControl, createManifest, signControl, signManifest, type ControlAction, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf, type TestKeys } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app } from './apps.ts'

describe('rollout control on nodes running an app', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('pause holds the upgrade, resume releases it; retire fails old calls with VersionRetired and drops the past-SO', async () => {
    const keys: TestKeys = await makeKeys()
    const signers = keys.release.slice(0, 2)
    const control = async (seq: number, scope: number, action: ControlAction) => {
      let c = await createControl({ system: 'test', seq, scope, action, createdAt: seq })
      for (const k of signers) c = await signControl(c, k)
      return c
    }
    const archive = await app('archive-v0')
    const v0 = await buildBundle(archive)
    const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: 'archive', bundle: v0.root, bundleSize: v0.size }], createdAt: 1 }
    const a = await startNode(genesis, { pack: [archive], app: { class: 'archive', manager: { retryMs: 100 } } })
    nodes.push(a)
    const b = await startNode(genesis, { bootstrap: a.libp2p.getMultiaddrs().map(String), app: { class: 'archive', manager: { retryMs: 100 } } })
    nodes.push(b)

    expect(await a.publishControl(await control(1, 1, { type: 'pause' }))).toBe('accepted')
    const packed = await a.bundles.packFiles(await app('cache-v1'))
    let manifest = await createManifest({
      system: 'test', version: 1, previous: a.head().cid, createdAt: 2,
      classUpgrades: [{ oldClass: 'archive', newClass: 'archive', bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'eager' } }]
    })
    for (const k of signers) manifest = await signManifest(manifest, k)
    await a.publish(manifest)
    await eventually(() => [a, b].every(n => n.app!.manager.phase?.phase === 'waiting'), 'both held in waiting by the pause', 30_000)
    expect([a, b].map(n => n.app!.manager.current.version)).toEqual([0, 0])

    expect(await b.publishControl(await control(2, 1, { type: 'resume' }))).toBe('accepted')
    await eventually(() => [a, b].every(n => n.app!.manager.current.version === 1), 'both at version 1 after the resume', 30_000)

    // a version-0 caller is served through the past-SO until version 0 is retired
    expect(await a.app!.layer.call(b.peerId, 'add', ['old'], { version: 0, class: 'archive' })).toBe(true)
    expect(b.app!.host.status().past).toEqual([[0, 0]])
    expect(await a.publishControl(await control(3, 1, { type: 'retire', minimumVersion: 1 }))).toBe('accepted')
    await eventually(() => b.app!.host.status().state === 'running' && b.app!.host.status().past.length === 0 && b.app!.host.status().version === 1, 'b reloaded without the past-SO')
    await expect(a.app!.layer.call(b.peerId, 'has', ['old'], { version: 0, class: 'archive' })).rejects.toMatchObject({ name: 'VersionRetiredError' })
    expect(await a.app!.layer.call(b.peerId, 'has', ['old'])).toBe(true)
  })
})
