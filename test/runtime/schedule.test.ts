/**
 * Real nodes follow the manifest's scheduling function through their fleet views (decision 10):
 * twelve nodes in three replica groups run an app; a manifest whose class upgrade is scheduled
 * `one-replica-at-a-time` never takes two members of a group down at once, and every node ends
 * upgraded. `eager` still upgrades everyone; an unknown schedule waits and is reported.
 */
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig, type ScheduleSpec } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf, type TestKeys } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { StatusRecord } from '../../src/schedule/index.ts'

const APPS = fileURLToPath(new URL('../fixtures/apps/', import.meta.url))

async function app (name: string): Promise<Map<string, Uint8Array>> {
  return new Map([['index.js', await readFile(`${APPS}${name}/index.js`)]])
}

/** One line of the status timeline, in the order the (single-process) nodes emitted them. */
interface Line {
  node: number
  group: string
  event: string
}

interface Fleet {
  keys: TestKeys
  nodes: MoltNode[]
  groups: string[]
  timeline: Line[]
  published: Array<{ node: number, record: StatusRecord }>
}

/**
 * Starts `groups × size` nodes of class `archive`; the members of a group are connected to each
 * other and count each other as replicas; group i's first node is connected to group i-1's.
 */
async function startFleet (nodes: MoltNode[], groupCount: number, size: number): Promise<Fleet> {
  const keys = await makeKeys()
  const archive = await app('archive-v0')
  const cache = await app('cache-v1')
  const v0 = await buildBundle(archive)
  const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: 'archive', bundle: v0.root, bundleSize: v0.size }], createdAt: 1 }
  const privateKeys = await Promise.all(Array.from({ length: groupCount * size }, async () => await generateKeyPair('Ed25519')))
  const ids = privateKeys.map(k => peerIdFromPrivateKey(k).toString())
  const groups: string[] = []
  const timeline: Line[] = []
  const published: Fleet['published'] = []
  for (let i = 0; i < privateKeys.length; i++) {
    const g = Math.floor(i / size)
    const group = `g${g}`
    groups.push(group)
    const members = ids.slice(g * size, (g + 1) * size)
    const node = await startNode(genesis, {
      privateKey: privateKeys[i],
      pack: [archive, cache],
      // every node packs every bundle, so none fetches one: announcing them in the DHT would only
      // add a walk per node and bundle, once connected, to the load the test runs under
      bundles: { provide: false },
      app: {
        class: 'archive',
        manager: { retryMs: 100 },
        fleet: { tags: { group }, replicas: members, announceMs: 500, evalEveryMs: 200 }
      }
    })
    nodes.push(node)
    node.addEventListener('upgrade:phase', (e) => { timeline.push({ node: i, group, event: e.detail.phase }) })
    node.addEventListener('upgrade:rolled-back', () => { timeline.push({ node: i, group, event: 'rolled-back' }) })
    node.addEventListener('upgrade:postponed', () => { timeline.push({ node: i, group, event: 'postponed' }) })
    node.addEventListener('upgrade:completed', () => { timeline.push({ node: i, group, event: 'completed' }) })
    node.app!.fleet.events.addEventListener('status:published', (e) => { published.push({ node: i, record: e.detail }) })
    // the group's earlier members, and the previous group's first node
    const dials = nodes.slice(g * size, i).concat(i % size === 0 && g > 0 ? [nodes[(g - 1) * size]!] : [])
    await Promise.all(dials.map(async peer => { await node.libp2p.dial(peer.libp2p.getMultiaddrs()) }))
  }
  return { keys, nodes, groups, timeline, published }
}

async function publishUpgrade (fleet: Fleet, schedule: ScheduleSpec): Promise<void> {
  const a = fleet.nodes[0]!
  const packed = await a.bundles.packFiles(await app('cache-v1'))
  let manifest = await createManifest({
    system: 'test', version: 1, previous: a.head().cid, createdAt: 2,
    classUpgrades: [{ oldClass: 'archive', newClass: 'archive', bundle: packed.cid, bundleSize: packed.size, schedule }]
  })
  for (const k of fleet.keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
  await a.publish(manifest)
}

/**
 * Walks the timeline: a node is down from `quiescing` until `admitted`, `rolled-back` or a
 * postponement. Returns, per group, the most members down at once and how many down spells it had.
 */
function downs (timeline: Line[]): Map<string, { most: number, spells: number }> {
  const down = new Map<number, boolean>()
  const out = new Map<string, { most: number, spells: number, now: number }>()
  for (const line of timeline) {
    const g = out.get(line.group) ?? { most: 0, spells: 0, now: 0 }
    out.set(line.group, g)
    if (line.event === 'quiescing' && down.get(line.node) !== true) {
      down.set(line.node, true)
      g.now++
      g.spells++
      g.most = Math.max(g.most, g.now)
    } else if ((line.event === 'admitted' || line.event === 'rolled-back' || line.event === 'postponed') && down.get(line.node) === true) {
      down.set(line.node, false)
      g.now--
    }
  }
  return new Map([...out].map(([k, v]) => [k, { most: v.most, spells: v.spells }]))
}

describe('real nodes follow the manifest\'s schedule through their fleet views', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('one-replica-at-a-time: never two members of a group down at once; every node ends upgraded', async () => {
    const fleet = await startFleet(nodes, 3, 4)
    await publishUpgrade(fleet, { name: 'one-replica-at-a-time', params: { settleMs: 200 } })
    await eventually(() => nodes.every(n => n.app!.manager.current.version === 1), 'every node at version 1', 50_000, 100)

    const byGroup = downs(fleet.timeline)
    expect([...byGroup.keys()].sort()).toEqual(['g0', 'g1', 'g2'])
    for (const [, g] of byGroup) {
      expect(g.most).toBe(1)
      expect(g.spells).toBeGreaterThanOrEqual(4)
    }
    // the view was fed: every node announced going down, and ended running version 1
    for (let i = 0; i < nodes.length; i++) {
      const own = fleet.published.filter(p => p.node === i).map(p => p.record)
      expect(own.some(r => r.phase === 'upgrading' && r.target === 1)).toBe(true)
      expect(nodes[i]!.app!.fleet.own()).toMatchObject({ version: 1, target: 1, phase: 'running' })
    }
    // and the intents of the schedule went through the records
    expect(fleet.published.some(p => p.record.phase === 'intent')).toBe(true)
    expect(fleet.timeline.filter(l => l.event === 'rolled-back')).toEqual([])
  }, 60_000)

  it('eager still upgrades everyone', async () => {
    const fleet = await startFleet(nodes, 2, 3)
    await publishUpgrade(fleet, { name: 'eager' })
    await eventually(() => nodes.every(n => n.app!.manager.current.version === 1), 'every node at version 1', 30_000, 100)
    for (const n of nodes) {
      expect(n.app!.fleet.own()).toMatchObject({ version: 1, target: 1, phase: 'running' })
    }
  }, 40_000)

  it('an unknown schedule holds the upgrade and is reported once, as UnknownScheduleError', async () => {
    const fleet = await startFleet(nodes, 1, 2)
    const errors: Array<{ node: number, name: string }> = []
    fleet.nodes.forEach((n, i) => { n.addEventListener('schedule:error', (e) => { errors.push({ node: i, name: e.detail.error.name }) }) })
    await publishUpgrade(fleet, { name: 'no-such-schedule' })
    await eventually(() => nodes.every(n => n.app!.manager.phase?.phase === 'waiting') && errors.length === nodes.length, 'both held in waiting, and reported', 30_000)
    expect(errors.map(e => e.name)).toEqual(['UnknownScheduleError', 'UnknownScheduleError'])
    expect(nodes.map(n => n.app!.manager.current.version)).toEqual([0, 0])
    expect(nodes.map(n => n.app!.fleet.own().phase)).toEqual(['waiting', 'waiting'])
  }, 40_000)
})
