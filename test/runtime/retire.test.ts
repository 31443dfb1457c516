/**
 * The minimum supported version beyond the signed `retire`: a node raises it by itself once no
 * counted node has been below it for a while (dead nodes expire and never block it), and a node
 * that comes back at a retired version catches up without its schedule (docs/schedule.md).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { CID } from 'multiformats/cid'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { printStatus } from '../../src/cli/node.ts'
import { createControl, createManifest, signControl, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf, type TestKeys } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app, gate } from './apps.ts'

/** Signs and publishes the next kv version through `node`, with the given schedule. */
async function publishKv (node: MoltNode, keys: TestKeys, version: number, schedule = 'eager'): Promise<void> {
  const packed = await node.bundles.packFiles(await app(`kv-v${version}`))
  let manifest = await createManifest({
    system: 'test', version, previous: node.head().cid, createdAt: 1 + version,
    classUpgrades: [{ oldClass: 'kv', newClass: 'kv', bundle: packed.cid, bundleSize: packed.size, schedule: { name: schedule } }]
  })
  for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
  await node.publish(manifest)
}

async function kvGenesis (keys: TestKeys): Promise<{ genesis: GenesisConfig, files: Map<string, Uint8Array> }> {
  const files = await app('kv-v0')
  const v0 = await buildBundle(files)
  return { files, genesis: { system: 'test', policy: policyOf(keys), classes: [{ name: 'kv', bundle: v0.root, bundleSize: v0.size }], createdAt: 1 } }
}

describe('the minimum supported version', () => {
  const nodes: MoltNode[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await stopAll(nodes)
    await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
  })

  it('rises by itself once no counted node has been below it for retireAfterMs; a live node below holds it, a dead one does not', async () => {
    const keys = await makeKeys()
    const { genesis, files } = await kvGenesis(keys)
    const privateKeys = await Promise.all([0, 1, 2].map(async () => await generateKeyPair('Ed25519')))
    const ids = privateKeys.map(k => peerIdFromPrivateKey(k).toString())
    const held = gate()
    for (let i = 0; i < 3; i++) {
      nodes.push(await startNode(genesis, {
        privateKey: privateKeys[i],
        fetchBundles: true,
        pack: i === 0 ? [files] : [],
        bootstrap: i === 0 ? [] : nodes[0]!.libp2p.getMultiaddrs().map(String),
        app: {
          class: 'kv',
          retireAfterMs: 1500,
          // each node counts the other two
          fleet: { roster: ids.filter((_, j) => j !== i), announceMs: 200, expiryMs: 1000 },
          manager: { retryMs: 100 },
          ...(i === 2 ? { schedule: async ({ signal }) => { await held.wait(signal) } } : {})
        }
      }))
    }
    const [a, b, c] = nodes as [MoltNode, MoltNode, MoltNode]
    await c.libp2p.dial(b.libp2p.getMultiaddrs())
    expect(await c.app!.layer.call(a.peerId, 'put', ['k', 'written at version 0'])).toBe(true)

    await publishKv(a, keys, 1)
    await eventually(() => a.app!.manager.current.version === 1 && b.app!.manager.current.version === 1, 'a and b at version 1', 30_000)
    await eventually(() => c.app!.manager.phase?.phase === 'waiting', 'c waits at version 0', 30_000)
    await eventually(() => {
      const peers = a.status().fleet!.peers
      return peers.some(p => p.peer === ids[2] && p.version === 0 && p.phase === 'waiting') && peers.some(p => p.peer === ids[1] && p.version === 1 && p.phase === 'running')
    }, 'a sees b at version 1 and c waiting at version 0', 10_000)

    // molt status on a: the fleet it counts, a progress bar, the versions and phases
    const out: string[] = []
    printStatus(a.status(), { out: (line) => { out.push(line) }, err: () => {} })
    const text = out.join('\n')
    expect(text).toMatch(/progress +\[#+-+\] 2\/3 at version 1/)
    expect(text).toContain('versions   v0: 1, v1: 2')
    expect(text).toMatch(/rollout +running/)

    // c is alive and counted at version 0: the past-SO of 0 stays on a and b, well past retireAfterMs
    await new Promise(resolve => setTimeout(resolve, 4000))
    expect(a.app!.minimumVersion()).toBe(0)
    expect(b.app!.minimumVersion()).toBe(0)
    expect(a.app!.manager.serving().past).toEqual([0])

    // c dies at version 0: it expires from the views and no longer holds the minimum
    await c.stop()
    nodes.splice(2, 1)
    await eventually(() => a.app!.minimumVersion() === 1 && b.app!.minimumVersion() === 1, 'a and b raised the minimum to 1', 30_000)
    expect(a.status().app!.minimumVersion).toBe(1)
    expect(a.status().control.minimumVersion).toBe(0) // no control message was signed
    await eventually(() => a.app!.host.status().state === 'running' && a.app!.host.status().past.length === 0, 'a reloaded without the past-SO of 0', 30_000)
    await expect(b.app!.layer.call(a.peerId, 'get', ['k'], { version: 0, class: 'kv' })).rejects.toMatchObject({ name: 'VersionRetiredError' })
    expect(await b.app!.layer.call(a.peerId, 'read', ['k'])).toBe('written at version 0')
  })

  it('a node that returns after its version was retired catches up without its schedule and keeps its state', async () => {
    const keys = await makeKeys()
    const { genesis, files } = await kvGenesis(keys)
    const dataDir = await mkdtemp(join(tmpdir(), 'molt-returning-'))
    dirs.push(dataDir)
    const never = gate()
    const options = (bootstrap: string[]) => ({
      dataDir,
      fetchBundles: true,
      bootstrap,
      // its own schedule would hold it for ever
      app: { class: 'kv', manager: { retryMs: 100 }, schedule: async ({ signal }: { signal: AbortSignal }) => { await never.wait(signal) } }
    })
    // a keeps no bundle it does not need itself; b keeps the service's default 3 newest
    const a = await startNode(genesis, { pack: [files], bundles: { keepRecent: 0 }, app: { class: 'kv', manager: { retryMs: 100 } } })
    nodes.push(a)
    const b = await startNode(genesis, { bootstrap: a.libp2p.getMultiaddrs().map(String), fetchBundles: true, app: { class: 'kv', manager: { retryMs: 100 } } })
    nodes.push(b)
    let c = await startNode(genesis, options(a.libp2p.getMultiaddrs().map(String)))
    nodes.push(c)
    expect(await a.app!.layer.call(c.peerId, 'put', ['k', 'written at version 0'])).toBe(true)
    const id = c.peerId.toString()
    await c.stop()
    nodes.splice(nodes.indexOf(c), 1)

    // while c is away: versions 1 and 2, then 0 and 1 are retired
    await publishKv(a, keys, 1)
    await publishKv(a, keys, 2)
    await eventually(() => a.app!.manager.current.version === 2 && b.app!.manager.current.version === 2, 'a and b at version 2', 30_000)
    let retire = await createControl({ system: 'test', seq: 1, scope: 2, action: { type: 'retire', minimumVersion: 2 }, createdAt: 10 })
    for (const k of keys.release.slice(0, 2)) retire = await signControl(retire, k)
    expect(await a.publishControl(retire)).toBe('accepted')
    // the bundles of the retired versions 0 and 1 become collectable: a drops them, b keeps them
    // for peers catching up
    const bundleOf = (v: number): string => (v === 0 ? genesis.classes[0]!.bundle : a.chain.get(v)!.body.classUpgrades[0]!.bundle).toString()
    await eventually(async () => !(await a.bundles.has(CID.parse(bundleOf(0)))) && !(await a.bundles.has(CID.parse(bundleOf(1)))), 'a collected the bundles of versions 0 and 1', 10_000)
    expect(await a.bundles.has(CID.parse(bundleOf(2)))).toBe(true)
    await eventually(() => b.controls.state().minimumVersion === 2, 'b applied the retirement', 10_000)
    for (const v of [0, 1, 2]) expect(await b.bundles.has(CID.parse(bundleOf(v)))).toBe(true)

    // c comes back at version 0 with the same identity, learns the chain and the retirement, and
    // goes through 1 and 2 although its schedule never says go
    c = await startNode(genesis, options(a.libp2p.getMultiaddrs().map(String)))
    nodes.push(c)
    expect(c.peerId.toString()).toBe(id)
    await eventually(() => c.app!.manager.current.version === 2 && c.app!.manager.phase == null, 'c caught up to version 2', 60_000)
    expect(c.controls.state().minimumVersion).toBe(2)
    expect((await c.app!.manager.history()).filter(h => h.event === 'upgraded').map(h => h.to)).toEqual([1, 2])
    // its state came through both TFs; version-2 callers reach it, retired ones are refused
    expect(await a.app!.layer.call(c.peerId, 'lookup', ['k'])).toBe('written at version 0')
    await expect(a.app!.layer.call(c.peerId, 'get', ['k'], { version: 0, class: 'kv' })).rejects.toMatchObject({ name: 'VersionRetiredError' })
  })
})
