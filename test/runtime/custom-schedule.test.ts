/**
 * Custom scheduling functions exported by the new class's bundle (`bundle:<export>`), on real
 * nodes: one that works decides the upgrade; one that throws, loops for ever, writes to its
 * read-only input or is not a function is contained, counts as wait, is reported, and the node
 * keeps serving.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app } from './apps.ts'

interface Reported { version: number, schedule: string, error: Error }

/** Two nodes at version 0; version 1 published with `schedule`. */
async function rollout (nodes: MoltNode[], schedule: string, params: Record<string, number> = {}): Promise<Reported[]> {
  const keys = await makeKeys()
  const v0 = await app('sf-v0')
  const root = await buildBundle(v0)
  const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: 'sf', bundle: root.root, bundleSize: root.size }], createdAt: 1 }
  const reported: Reported[] = []
  for (let i = 0; i < 2; i++) {
    const node = await startNode(genesis, {
      fetchBundles: true,
      pack: i === 0 ? [v0] : [],
      bootstrap: i === 0 ? [] : nodes[0]!.libp2p.getMultiaddrs().map(String),
      app: { class: 'sf', manager: { retryMs: 100 }, fleet: { evalEveryMs: 200 } }
    })
    node.app!.events.addEventListener('schedule:error', (e) => { reported.push(e.detail) })
    nodes.push(node)
  }
  const a = nodes[0]!
  const packed = await a.bundles.packFiles(await app('sf-v1'))
  let manifest = await createManifest({
    system: 'test', version: 1, previous: a.head().cid, createdAt: 2,
    classUpgrades: [{ oldClass: 'sf', newClass: 'sf', bundle: packed.cid, bundleSize: packed.size, schedule: { name: schedule, params } }]
  })
  for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
  await a.publish(manifest)
  return reported
}

describe('custom scheduling functions from the bundle', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('bundle:goAfter decides: nodes wait until it says go, then upgrade', async () => {
    const reported = await rollout(nodes, 'bundle:goAfter', { afterMs: 1500 })
    const [a, b] = nodes as [MoltNode, MoltNode]
    await eventually(() => a.status().app?.rollout?.state === 'waiting', 'a waits on its custom schedule', 20_000)
    expect(a.status().app!.rollout).toMatchObject({ version: 1, schedule: 'bundle:goAfter', reason: 'not yet' })
    await eventually(() => a.app!.manager.current.version === 1 && b.app!.manager.current.version === 1, 'both upgraded', 30_000)
    expect(await b.app!.layer.call(a.peerId, 'ping', [])).toBe('v1')
    const upgraded = (await a.app!.manager.history()).find(h => h.event === 'upgraded')
    expect(upgraded).toBeDefined()
    expect(reported).toEqual([])
  })

  for (const [name, errorName, message] of [
    ['loops', 'ScheduleTimeoutError', /ran past its budget/],
    ['throws', 'ScheduleFailedError', /the custom schedule is broken/],
    ['mutates', 'ScheduleFailedError', /read only|Cannot assign|not extensible/i],
    ['notAFunction', 'ScheduleFailedError', /exports no function "notAFunction"/]
  ] as const) {
    it(`bundle:${name} is contained: reported as ${errorName}, counted as wait, and the node keeps serving`, async () => {
      const reported = await rollout(nodes, `bundle:${name}`)
      const [a, b] = nodes as [MoltNode, MoltNode]
      await eventually(() => reported.filter(r => r.schedule === `bundle:${name}`).length >= 2, 'both nodes reported the schedule', 30_000).catch((err) => { console.log(reported, nodes.map(n => [n.app!.manager.current.version, n.status().app?.rollout])); throw err })
      for (const r of reported) {
        expect(r.version).toBe(1)
        expect(r.error.name).toBe(errorName)
        expect(r.error.message).toMatch(message)
      }
      // each distinct error once per node, however often the SF was asked
      await new Promise(resolve => setTimeout(resolve, 1000))
      expect(reported.length).toBe(2)
      // still at version 0, waiting, and serving calls meanwhile
      for (let i = 0; i < 20; i++) {
        expect(await b.app!.layer.call(a.peerId, 'ping', [])).toBe('v0')
      }
      expect(a.app!.manager.current.version).toBe(0)
      expect(a.app!.manager.phase?.phase).toBe('waiting')
      expect(a.status().app!.rollout).toMatchObject({ version: 1, state: 'waiting' })
    })
  }
})
