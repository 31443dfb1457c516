/**
 * HotOS'03 §7.1–7.3, pages → pages + comments, across three real nodes in mixed mode.
 *
 * molt's genesis is version 0, so the paper's "v1" (a web server of pages) is version 0 here
 * (fixture `pages-v0`: pages, plus per-page like counts that the next version forgets), and the
 * paper's "v2" (pages + comments) is version 1 (fixture `pages-v1`, which carries the TF, the
 * past-SO and the future-SO).
 */
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app, gate } from './apps.ts'

describe('pages → pages + comments in mixed mode', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('comments written through the future-SO survive the upgrade; old callers keep pages and likes through the past-SO', async () => {
    const keys = await makeKeys()
    const pages = await app('pages-v0')
    const comments = await app('pages-v1')
    const v0 = await buildBundle(pages)
    const genesis: GenesisConfig = {
      system: 'test',
      policy: policyOf(keys),
      classes: [{ name: 'wiki', bundle: v0.root, bundleSize: v0.size }],
      createdAt: 1
    }
    const gates = [gate(), gate(), gate()]
    for (let i = 0; i < 3; i++) {
      nodes.push(await startNode(genesis, {
        fetchBundles: true,
        pack: i === 0 ? [pages] : [],
        bootstrap: i === 0 ? [] : nodes[0]!.libp2p.getMultiaddrs().map(String),
        app: { class: 'wiki', schedule: async ({ signal }) => { await gates[i]!.wait(signal) }, manager: { retryMs: 100 } }
      }))
    }
    // a: upgrades first and is the version-1 caller; b: the node under test; c: stays at
    // version 0 throughout and is the version-0 caller
    const [a, b, c] = nodes as [MoltNode, MoltNode, MoltNode]
    await c.libp2p.dial(b.libp2p.getMultiaddrs())

    // version 0 everywhere: a page and two likes on b
    expect(await c.app!.layer.call(b.peerId, 'putPage', ['home', 'welcome'])).toBe(true)
    expect(await c.app!.layer.call(b.peerId, 'like', ['home'])).toBe(1)
    expect(await a.app!.layer.call(b.peerId, 'like', ['home'])).toBe(2)

    const packed = await a.bundles.packFiles(comments)
    let manifest = await createManifest({
      system: 'test',
      version: 1,
      previous: a.head().cid,
      classUpgrades: [{ oldClass: 'wiki', newClass: 'wiki', bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'gated' } }],
      createdAt: 2
    })
    for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
    await a.publish(manifest)

    // a upgrades; b and c wait at version 0 with the future-SO of version 1 installed
    gates[0]!.open()
    await eventually(() => a.app!.manager.current.version === 1, 'a at version 1', 30_000)
    await eventually(() => [b, c].every(n => n.app!.manager.phase?.phase === 'waiting'), 'b and c wait with the future-SO installed', 30_000)
    expect(b.app!.manager.current.version).toBe(0)
    expect(b.app!.manager.serving().future).toEqual([1])

    // §7.1: comments (I_1) go to b's future-SO; pages (D_1) go through it to the version-0 object
    expect(await a.app!.layer.call(b.peerId, 'addComment', ['home', 'first!'])).toBe(1)
    expect(await a.app!.layer.call(b.peerId, 'addComment', ['home', 'nice page'])).toBe(2)
    await expect(a.app!.layer.call(b.peerId, 'addComment', ['nowhere', 'lost'])).rejects.toMatchObject({ name: 'RemoteError', remoteName: 'NoSuchPageError' })
    expect(await a.app!.layer.call(b.peerId, 'getPage', ['home'])).toBe('welcome')
    // a page edit by a version-1 caller is seen by a version-0 caller, and the other way round
    expect(await a.app!.layer.call(b.peerId, 'putPage', ['about', 'from v1'])).toBe(true)
    expect(await c.app!.layer.call(b.peerId, 'getPage', ['about'])).toBe('from v1')
    expect(await c.app!.layer.call(b.peerId, 'putPage', ['home', 'welcome, edited by v0'])).toBe(true)
    expect(await a.app!.layer.call(b.peerId, 'getPage', ['home'])).toBe('welcome, edited by v0')
    expect(await a.app!.layer.call(b.peerId, 'comments', ['home'])).toEqual(['first!', 'nice page'])
    // version 0 has no comments: a version-0 caller cannot reach them on the version-0 node
    await expect(c.app!.layer.call(b.peerId, 'comments', ['home'])).rejects.toMatchObject({ remoteName: 'MethodNotFoundError' })
    // the like counts (I_0) stay version 0's, and keep counting
    expect(await c.app!.layer.call(b.peerId, 'like', ['home'])).toBe(3)
    expect(await c.app!.layer.call(b.peerId, 'like', ['about'])).toBe(1)

    // b upgrades: §7.3, its TF reads the future-SO's persisted comments
    gates[1]!.open()
    await eventually(() => b.app!.manager.current.version === 1 && b.app!.manager.phase == null, 'b at version 1', 30_000)
    expect(b.app!.host.status().past).toEqual([[0, 0]])
    expect(await a.app!.layer.call(b.peerId, 'comments', ['home'])).toEqual(['first!', 'nice page'])
    expect(await a.app!.layer.call(b.peerId, 'addComment', ['home', 'after the upgrade'])).toBe(3)
    expect(((await a.app!.layer.call(b.peerId, 'listPages', [])) as string[]).sort()).toEqual(['about', 'home'])

    // §7.2: c, still at version 0, is served by b's past-SO. Pages are the new object's...
    expect(c.app!.manager.current.version).toBe(0)
    expect(await c.app!.layer.call(b.peerId, 'getPage', ['home'])).toBe('welcome, edited by v0')
    expect(await c.app!.layer.call(b.peerId, 'putPage', ['news', 'written by v0 after the upgrade'])).toBe(true)
    expect(await a.app!.layer.call(b.peerId, 'getPage', ['news'])).toBe('written by v0 after the upgrade')
    expect(await a.app!.layer.call(b.peerId, 'putPage', ['about', 'edited by v1 after the upgrade'])).toBe(true)
    expect(await c.app!.layer.call(b.peerId, 'getPage', ['about'])).toBe('edited by v1 after the upgrade')
    // ...and the past-SO's own state (the likes, I_0) was initialised from version 0's state
    expect(await c.app!.layer.call(b.peerId, 'likes', ['home'])).toBe(3)
    expect(await c.app!.layer.call(b.peerId, 'like', ['home'])).toBe(4)
    expect(await c.app!.layer.call(b.peerId, 'likes', ['about'])).toBe(1)
    // version 1 has no likes
    await expect(a.app!.layer.call(b.peerId, 'likes', ['home'])).rejects.toMatchObject({ remoteName: 'MethodNotFoundError' })

    // the past-SO's state is persisted: it survives a restart of b's worker (a reload of the same spec)
    await b.app!.host.stop()
    await b.app!.host.load({ current: { class: 'wiki', version: 1, bundle: packed.cid }, past: [{ from: 0, to: 0, bundle: packed.cid, class: 'wiki' }] })
    expect(await c.app!.layer.call(b.peerId, 'likes', ['home'])).toBe(4)
    expect(await a.app!.layer.call(b.peerId, 'comments', ['home'])).toEqual(['first!', 'nice page', 'after the upgrade'])
    expect((await b.app!.manager.history()).map(h => h.event)).toEqual(['upgraded'])
  })
})
