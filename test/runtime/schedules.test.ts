/**
 * Real nodes follow the manifest's built-in scheduling functions through their fleet views
 * (decision 10, docs/schedule.md "On a real node"). Twelve nodes on the memory transport, each
 * running an app, upgrade under `after-my-servers`, `class-order` and `canary`; each property is
 * proven from the recorded timeline of manager phases (`upgrade:phase`, `upgrade:completed`, …)
 * and of the test's own control messages, in the order the single-process nodes emitted them.
 * Each property runs under two seeds: the seed picks the roles (servers, first class, canaries)
 * and the manifest's `createdAt`, hence its CID and the seed of the SFs' random source.
 *
 * `gradual` is tested in gradual.test.ts (sixteen nodes, two seeded rollouts).
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { announceTopic, createControl, createManifest, signControl, signManifest, type ClassUpgrade, type GenesisConfig, type ScheduleSpec } from '../../src/manifest/index.ts'
import { mulberry32 } from '../../src/schedule/random.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf, type TestKeys } from '../fixtures.ts'
import { startNode, stopAll, connectNodes } from '../nodes.ts'
import { app } from './apps.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { AppFleetOptions } from '../../src/node/app.ts'

const N = 12
const SEEDS = [1, 2]

/** One line of the timeline: a node's manager event, or a control message the test published. */
interface Line {
  node: number
  event: string
}

interface Role {
  class: string
  fleet?: Omit<AppFleetOptions, 'announceMs' | 'evalEveryMs'>
  /** peers (indices) this node dials besides the backbone */
  dials?: number[]
}

interface Fleet {
  keys: TestKeys
  nodes: MoltNode[]
  ids: string[]
  timeline: Line[]
}

/** Fisher–Yates with the test's seeded generator. */
function shuffle<T> (items: T[], random: () => number): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

/**
 * Starts N nodes; `roles(ids)` gives each its class, counted peers and extra dials. The backbone:
 * node i dials i − 1 and one seeded earlier node, so gossip reaches everyone; a node is dialled to
 * the peers it counts, so its pulls find them.
 */
async function startFleet (nodes: MoltNode[], classes: string[], random: () => number, roles: (ids: string[]) => Role[]): Promise<Fleet> {
  const keys = await makeKeys()
  const archive = await app('archive-v0')
  const cache = await app('cache-v1')
  const v0 = await buildBundle(archive)
  const genesis: GenesisConfig = {
    system: 'test',
    policy: policyOf(keys),
    classes: classes.map(name => ({ name, bundle: v0.root, bundleSize: v0.size })),
    createdAt: 1
  }
  const privateKeys = await Promise.all(Array.from({ length: N }, async () => await generateKeyPair('Ed25519')))
  const ids = privateKeys.map(k => peerIdFromPrivateKey(k).toString())
  const role = roles(ids)
  const timeline: Line[] = []
  // start in parallel, then connect: the backbone (i − 1 and one seeded earlier node) and the roles' dials
  const started = await Promise.all(role.map(async (r, i) => await startNode(genesis, {
    privateKey: privateKeys[i],
    pack: [archive, cache],
    // every node packs every bundle, so none fetches one: announcing them in the DHT would only
    // add a walk per node and bundle, once connected, to the load the test runs under
    bundles: { provide: false },
    app: {
      class: r.class,
      manager: { retryMs: 100 },
      fleet: { ...r.fleet, announceMs: 300, evalEveryMs: 100 }
    }
  })))
  nodes.push(...started)
  started.forEach((node, i) => {
    node.addEventListener('upgrade:phase', (e) => { timeline.push({ node: i, event: e.detail.phase }) })
    node.addEventListener('upgrade:rolled-back', () => { timeline.push({ node: i, event: 'rolled-back' }) })
    node.addEventListener('upgrade:completed', () => { timeline.push({ node: i, event: 'completed' }) })
  })
  const links = new Set<string>()
  role.forEach((r, i) => {
    for (const d of [...(i > 0 ? [i - 1, Math.floor(random() * i)] : []), ...(r.dials ?? [])]) {
      if (d !== i && !links.has(`${d}-${i}`)) links.add(`${i}-${d}`)
    }
  })
  await Promise.all([...links].map(async l => {
    const [a, b] = l.split('-').map(Number)
    await connectNodes(started[a!]!, started[b!]!)
  }))
  // the manifest is gossiped: publish only once both ends of every link know the other's subscription
  const topic = announceTopic('test')
  await eventually(() => [...links].every(l => {
    const [a, b] = l.split('-').map(Number)
    const sees = (x: number, y: number): boolean => started[x]!.libp2p.services.pubsub.getSubscribers(topic).some(p => p.equals(started[y]!.libp2p.peerId))
    return sees(a!, b!) && sees(b!, a!)
  }), 'every link carries the announce topic', 15_000, 50)
  return { keys, nodes, ids, timeline }
}

/** Publishes version 1: each class moves to the cache-v1 bundle under `schedule`. */
async function publishUpgrade (fleet: Fleet, classes: string[], schedule: ScheduleSpec, seed: number): Promise<void> {
  const a = fleet.nodes[0]!
  const packed = await a.bundles.packFiles(await app('cache-v1'))
  const classUpgrades: ClassUpgrade[] = classes.map(c => ({ oldClass: c, newClass: c, bundle: packed.cid, bundleSize: packed.size, schedule }))
  // createdAt varies the manifest's CID, hence the seed of the SFs' random source
  let manifest = await createManifest({ system: 'test', version: 1, previous: a.head().cid, createdAt: 1000 + seed, classUpgrades })
  for (const k of fleet.keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
  await a.publish(manifest)
}

/** Index in the timeline of a node's first `event`, or -1. */
function first (timeline: Line[], node: number, event: string): number {
  return timeline.findIndex(l => l.node === node && l.event === event)
}

/** Every node ran the upgrade exactly once, cleanly, and ends at version 1 running. */
function expectAllUpgraded (fleet: Fleet): void {
  expect(fleet.timeline.filter(l => l.event === 'rolled-back')).toEqual([])
  for (let i = 0; i < N; i++) {
    expect(fleet.timeline.filter(l => l.node === i && l.event === 'admitted')).toHaveLength(1)
    expect(fleet.nodes[i]!.app!.fleet.own()).toMatchObject({ version: 1, target: 1, phase: 'running' })
  }
}

async function allAtVersion1 (nodes: MoltNode[]): Promise<void> {
  await eventually(() => nodes.every(n => n.app!.manager.current.version === 1), 'every node at version 1', 30_000, 50)
}

describe('real nodes follow after-my-servers, class-order and canary through their fleet views', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  for (const seed of SEEDS) {
    it(`after-my-servers (seed ${seed}): no client quiesces before every one of its servers is admitted`, async () => {
      const random = mulberry32(seed)
      // three tiers over a seeded permutation: 3 backends, 3 middles (2 backends each), 6 fronts
      // (2 middles each); a middle is both a client and a server
      const order = shuffle([...Array(N).keys()], random)
      const backends = order.slice(0, 3)
      const middles = order.slice(3, 6)
      const fronts = order.slice(6)
      const servers = new Map<number, number[]>()
      for (const m of middles) servers.set(m, shuffle(backends, random).slice(0, 2))
      for (const f of fronts) servers.set(f, shuffle(middles, random).slice(0, 2))

      const fleet = await startFleet(nodes, ['archive'], random, ids => ids.map((_, i) => ({
        class: 'archive',
        fleet: { servers: (servers.get(i) ?? []).map(s => ids[s]!) },
        dials: servers.get(i) ?? []
      })))
      await publishUpgrade(fleet, ['archive'], { name: 'after-my-servers' }, seed)
      await allAtVersion1(nodes)
      expectAllUpgraded(fleet)

      const { timeline } = fleet
      let held = 0
      for (const [client, mine] of servers) {
        const quiesced = first(timeline, client, 'quiescing')
        expect(quiesced).toBeGreaterThanOrEqual(0)
        for (const s of mine) {
          const admitted = first(timeline, s, 'admitted')
          expect(admitted, `server ${s} admitted before client ${client} quiesced`).toBeGreaterThanOrEqual(0)
          expect(quiesced, `client ${client} quiesced after server ${s} was admitted`).toBeGreaterThan(admitted)
        }
        // not vacuous: the client was waiting while one of its servers was not yet admitted
        const waited = first(timeline, client, 'waiting')
        if (waited >= 0 && mine.some(s => waited < first(timeline, s, 'admitted'))) held++
      }
      expect(held).toBeGreaterThan(0)
      // transitively, no front quiesced before every backend of its middles was admitted
      for (const f of fronts) {
        for (const m of servers.get(f)!) {
          for (const b of servers.get(m)!) expect(first(timeline, f, 'quiescing')).toBeGreaterThan(first(timeline, b, 'admitted'))
        }
      }
    }, 40_000)
  }

  for (const seed of SEEDS) {
    it(`class-order (seed ${seed}): no node of the second class quiesces before every node of the first is upgraded`, async () => {
      const random = mulberry32(100 + seed)
      // 4 nodes of class `archive` (first), 8 of class `mirror`, over a seeded permutation
      const order = shuffle([...Array(N).keys()], random)
      const firsts = new Set(order.slice(0, 4))
      const firstList = [...firsts]
      const classOf = (i: number): string => firsts.has(i) ? 'archive' : 'mirror'

      const fleet = await startFleet(nodes, ['archive', 'mirror'], random, ids => ids.map((_, i) => firsts.has(i)
        ? { class: 'archive' }
        // the exact guarantee needs every first-class node counted: the roster, in the view too
        : { class: 'mirror', fleet: { roster: firstList.map(f => ids[f]!) }, dials: firstList }))
      // the class upgrades of both classes name the schedule (a class without an upgrade in the
      // manifest would merely advance to version 1)
      await publishUpgrade(fleet, ['archive', 'mirror'], {
        name: 'class-order',
        params: { first: 'archive', roster: firstList.map(f => fleet.ids[f]!).join(','), minFirst: firstList.length }
      }, seed)
      await allAtVersion1(nodes)
      expectAllUpgraded(fleet)
      for (let i = 0; i < N; i++) {
        expect(nodes[i]!.app!.manager.current.class).toBe(classOf(i))
        expect(nodes[i]!.app!.fleet.own().class).toBe(classOf(i))
      }

      const { timeline } = fleet
      const lastFirstAdmitted = Math.max(...firstList.map(f => first(timeline, f, 'admitted')))
      const lastFirstCompleted = Math.max(...firstList.map(f => first(timeline, f, 'completed')))
      let held = 0
      for (let i = 0; i < N; i++) {
        if (firsts.has(i)) continue
        const quiesced = first(timeline, i, 'quiescing')
        expect(quiesced, `mirror ${i} quiesced after every archive node was upgraded`).toBeGreaterThan(lastFirstAdmitted)
        expect(quiesced).toBeGreaterThan(lastFirstCompleted)
        const waited = first(timeline, i, 'waiting')
        if (waited >= 0 && waited < lastFirstAdmitted) held++
      }
      // not vacuous: second-class nodes were held while the first class was upgrading
      expect(held).toBeGreaterThan(0)
    }, 40_000)
  }

  for (const seed of SEEDS) {
    it(`canary (seed ${seed}): only the listed peers upgrade until the release (allow, no peers); then the rest do`, async () => {
      const random = mulberry32(200 + seed)
      const canaries = new Set(shuffle([...Array(N).keys()], random).slice(0, 3))
      const fleet = await startFleet(nodes, ['archive'], random, () => Array.from({ length: N }, () => ({ class: 'archive' })))
      const others = [...Array(N).keys()].filter(i => !canaries.has(i))
      await publishUpgrade(fleet, ['archive'], { name: 'canary', params: { peers: [...canaries].map(c => fleet.ids[c]!).join(',') } }, seed)

      // the canaries upgrade; every other node learnt of version 1 and is held in waiting
      await eventually(() => [...canaries].every(c => nodes[c]!.app!.manager.current.version === 1) &&
        others.every(o => nodes[o]!.app!.manager.phase?.phase === 'waiting' && nodes[o]!.app!.fleet.own().target === 1),
      'canaries at version 1, the others waiting for version 1', 30_000, 50)
      expect(others.map(o => nodes[o]!.app!.manager.current.version)).toEqual(others.map(() => 0))
      expect(others.map(o => nodes[o]!.app!.fleet.own().phase)).toEqual(others.map(() => 'waiting'))

      // the release: an allow control with an empty peer list for version 1
      let release = await createControl({ system: 'test', seq: 1, scope: 1, action: { type: 'allow', peers: [] }, createdAt: 3 })
      for (const k of fleet.keys.release.slice(0, 2)) release = await signControl(release, k)
      fleet.timeline.push({ node: -1, event: 'release' })
      const releasedAt = fleet.timeline.length - 1
      expect(await nodes[others[0]!]!.publishControl(release)).toBe('accepted')
      await allAtVersion1(nodes)
      expectAllUpgraded(fleet)

      const { timeline } = fleet
      for (const c of canaries) expect(first(timeline, c, 'admitted')).toBeLessThan(releasedAt)
      for (const o of others) {
        expect(first(timeline, o, 'waiting')).toBeLessThan(releasedAt)
        expect(first(timeline, o, 'quiescing'), `node ${o} quiesced only after the release`).toBeGreaterThan(releasedAt)
      }
      // every node applied the release and its view says so
      for (const n of nodes) expect(n.app!.fleet.control.released).toBe(true)
    }, 40_000)
  }
})
