/**
 * The simulator agrees with a real run (issue #4): 100 real molt nodes on the memory transport
 * (real gossipsub, real fleet views, real upgrades in isolated workers) roll out version 1 under
 * `one-replica-at-a-time` in 25 replica groups of 4; then `simulate()` runs the same fleet — the
 * same N, groups, schedule and parameters — given the network's and the hosts' figures measured
 * on that run, over three seeds. Asserted: the time to 90 % agrees within ± 20 %, and the most
 * members of a group down at once is the same on both sides, and is 1.
 *
 * **"Down"** is the simulator's definition on both sides: a node is down while its own status
 * record says `upgrading` — from the record it publishes when its SF says go (before the manager
 * quiesces) until the record it publishes on `upgrade:completed` (`running` at version 1). On a
 * real node that span contains the manager's `quiescing` … `admitted` (the definition of
 * test/runtime/schedule.test.ts, not serving), which is checked as well.
 *
 * **Measured inputs.** The simulator models the protocol — who counts whom, intents, the wait,
 * the acknowledgements and the re-check, the serialisation inside a group — by running the very
 * SF behind the same view interface. It does not model how fast a network carries a record or
 * how long a host takes to upgrade: those are its inputs, as they are for a user who runs
 * `molt simulate` with their own fleet's figures. So it is given, measured on the real run:
 *
 * - `gossipDelayMs`: every delivery of a change record (one a node published on a change of its
 *   status, heard − made) to a replica during the rollout: the simulator simulates those, and
 *   accounts for the periodic re-announces without simulating them;
 * - `lossRate`: the share of change records a replica never received as such;
 * - `upgradeMs`: each node's time down (its `upgrading` record to its `running` one);
 * - `prepareMs`: each node's time from accepting the manifest to its SF's first evaluation (the
 *   manager fetches the bundle and installs the future-SO first);
 *
 * each as the measured samples, which the simulator draws from (a heavy-tailed delay — most
 * deliveries take a few ms, a few take seconds on a loaded machine — is not a uniform range).
 * None of them is derived from the time to 90 % or fitted to it, and none encodes the
 * serialisation the simulator has to reproduce. The rest is configuration, identical on both
 * sides: `announceMs` (the views' re-announce period, the expiry is 3× on both), no contacts (the
 * real nodes count only their replicas), no crashes.
 *
 * The upgrade itself is a fixture app (`slow-v0` → `slow-v1`) whose quiesce takes 10 to 20 s,
 * fixed per node by its peer id, so the time down is dominated by a delay rather than by the
 * hosts' work (a TF worker, a new serving worker and an invariant worker per upgrade), which, with
 * 100 nodes in one process on two cores, depends on how many upgrade at once; the per-node spread
 * keeps the 25 nodes of a round from all needing the CPU at the same moment.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { announceTopic, createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { statusTopic } from '../../src/schedule/fleet.ts'
import { mulberry32 } from '../../src/schedule/random.ts'
import { simulate, type Scenario } from '../../src/schedule/simulate.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf, type TestKeys } from '../fixtures.ts'
import { startNode, stopAll, connectNodes } from '../nodes.ts'
import { app } from '../runtime/apps.ts'
import type { UpgradePhase } from '../../src/manager/types.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { Phase } from '../../src/schedule/types.ts'

const GROUPS = 25
const SIZE = 4
const N = GROUPS * SIZE
const SCHEDULE = 'one-replica-at-a-time'
const SETTLE_MS = 300
/** the views' re-announce period (the simulator is given the same) */
const ANNOUNCE_MS = 5000
/** the real runner asks the SF at least this often (it also asks on every view change) */
const EVAL_EVERY_MS = 200
const SEEDS = [1, 2, 3]
/** nodes started at once */
const BATCH = 10

/** One line of the real timeline; `t` is the wall clock (ms), as records' `at` are. */
type Line =
  | { t: number, node: number, kind: 'phase', phase: UpgradePhase }
  | { t: number, node: number, kind: 'completed' }
  | { t: number, node: number, kind: 'rolled-back' | 'postponed', error: string }
  | { t: number, node: number, kind: 'published', phase: Phase, version: number, seq: number, at: number }
  | { t: number, node: number, kind: 'heard', from: number, phase: Phase, seq: number, at: number }

type Published = Extract<Line, { kind: 'published' }>
type Heard = Extract<Line, { kind: 'heard' }>

interface Fleet {
  keys: TestKeys
  ids: string[]
  timeline: Line[]
  v1: Map<string, Uint8Array>
}

const groupOf = (i: number): number => Math.floor(i / SIZE)
const members = (g: number): number[] => Array.from({ length: SIZE }, (_, k) => g * SIZE + k)

/**
 * Starts the 100 nodes of class `slow` at version 0: group g is nodes 4g … 4g+3, whose members
 * count each other as replicas and are connected to each other. The backbone (node i dials i − 1
 * and one seeded earlier node) carries the manifest. Resolves once every link carries the
 * announce topic and every node's view holds its three replicas' records, their group topic
 * joined both ways.
 */
async function startFleet (nodes: MoltNode[]): Promise<Fleet> {
  const keys = await makeKeys()
  const v0 = await app('slow-v0')
  const v1 = await app('slow-v1')
  const root = await buildBundle(v0)
  const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: 'slow', bundle: root.root, bundleSize: root.size }], createdAt: 1 }
  const privateKeys = await Promise.all(Array.from({ length: N }, async () => await generateKeyPair('Ed25519')))
  const ids = privateKeys.map(k => peerIdFromPrivateKey(k).toString())
  const index = new Map(ids.map((id, i) => [id, i]))
  const timeline: Line[] = []
  for (let b = 0; b < N; b += BATCH) {
    nodes.push(...await Promise.all(Array.from({ length: Math.min(BATCH, N - b) }, async (_, k) => {
      const i = b + k
      const g = groupOf(i)
      return await startNode(genesis, {
        privateKey: privateKeys[i],
        pack: [v0, v1],
        // every node packs every bundle, so none fetches one: announcing them in the DHT would only
        // add a walk per node and bundle, once connected, to the load the test runs under
        bundles: { provide: false },
        app: {
          class: 'slow',
          // the deadlines are safety nets, not what is measured: a loaded machine (two cores
          // shared with other work) slows the run down rather than breaking it
          host: { startTimeoutMs: 300_000, quiesceMs: 60_000, watchdogMs: 60_000, transformMs: 300_000 },
          manager: { retryMs: 200, quiesceMs: 60_000, checkMs: 300_000, transformMs: 300_000 },
          fleet: { tags: { group: `g${g}` }, replicas: members(g).map(m => ids[m]!), announceMs: ANNOUNCE_MS, evalEveryMs: EVAL_EVERY_MS }
        }
      })
    })))
  }
  nodes.forEach((node, i) => {
    node.addEventListener('upgrade:phase', (e) => { timeline.push({ t: Date.now(), node: i, kind: 'phase', phase: e.detail.phase }) })
    node.addEventListener('upgrade:completed', () => { timeline.push({ t: Date.now(), node: i, kind: 'completed' }) })
    node.addEventListener('upgrade:rolled-back', (e) => { timeline.push({ t: Date.now(), node: i, kind: 'rolled-back', error: `${e.detail.error.name}: ${e.detail.error.message}` }) })
    node.addEventListener('upgrade:postponed', (e) => { timeline.push({ t: Date.now(), node: i, kind: 'postponed', error: `${e.detail.error.name}: ${e.detail.error.message}` }) })
    const fleet = node.app!.fleet
    fleet.events.addEventListener('status:published', (e) => {
      const r = e.detail
      timeline.push({ t: Date.now(), node: i, kind: 'published', phase: r.phase, version: r.version, seq: r.seq, at: r.at })
    })
    fleet.events.addEventListener('status:changed', (e) => {
      const s = e.detail.status
      const from = s == null ? undefined : index.get(s.peer)
      if (s?.source === 'record' && from != null) timeline.push({ t: Date.now(), node: i, kind: 'heard', from, phase: s.phase, seq: s.seq, at: s.at })
    })
  })

  const random = mulberry32(4)
  const links = new Set<string>()
  const link = (a: number, b: number): void => { if (a !== b && !links.has(`${b}-${a}`)) links.add(`${a}-${b}`) }
  for (let i = 1; i < N; i++) {
    for (const m of members(groupOf(i))) if (m < i) link(i, m)
    link(i, i - 1)
    link(i, Math.floor(random() * i))
  }
  const pairs = [...links].map(l => l.split('-').map(Number) as [number, number])
  for (let k = 0; k < pairs.length; k += 20) {
    await Promise.all(pairs.slice(k, k + 20).map(async ([a, b]) => { await connectNodes(nodes[a]!, nodes[b]!) }))
  }
  const sees = (x: number, y: number, topic: string): boolean => nodes[x]!.libp2p.services.pubsub.getSubscribers(topic).some(p => p.equals(nodes[y]!.libp2p.peerId))
  const announce = announceTopic('test')
  // the links still missing are named if the wait runs out (under the full suite's load one or
  // two stayed without the topic until gossipRepair existed: docs/propagation.md)
  await eventually(() => {
    const missing = pairs.filter(([a, b]) => !sees(a, b, announce) || !sees(b, a, announce))
    if (missing.length === 0) return true
    // which side lacks the other's subscription, whether its gossipsub heard of the peer and which
    // of its streams exist: what a repair would need to know
    const streams = (x: number, y: number): string => {
      const g = nodes[x]!.libp2p.services.pubsub as unknown as { peers: Map<string, unknown>, streamsOutbound: Map<string, unknown>, streamsInbound: Map<string, unknown> }
      const id = nodes[y]!.libp2p.peerId.toString()
      const repair = nodes[x]!.libp2p.services.gossipRepair.stats()
      return `${g.peers.has(id) ? 'known' : 'unheard of'} ${g.streamsOutbound.has(id) ? 'out' : '-'}/${g.streamsInbound.has(id) ? 'in' : '-'} (repair: ${repair.reopened} reopened, ${repair.readded} readded, ${repair.reidentified} reidentified)`
    }
    const detail = ([a, b]: [number, number]): string => `${a}-${b} (${sees(a, b, announce) ? '' : `${a} lacks ${b}'s; `}${sees(b, a, announce) ? '' : `${b} lacks ${a}'s; `}${a}: ${streams(a, b)}, ${b}: ${streams(b, a)}; ${nodes[a]!.libp2p.getConnections(nodes[b]!.peerId).length} conn)`
    throw new Error(`${missing.length} of ${pairs.length} links lack the topic: ${missing.slice(0, 8).map(detail).join(', ')}`)
  }, 'every link carries the announce topic', 120_000, 200)
  await eventually(() => nodes.every((node, i) => members(groupOf(i)).every(m => m === i || sees(i, m, statusTopic('test', `g${groupOf(i)}`))) &&
    node.app!.fleet.entries().length === SIZE - 1), 'every view holds its replicas, over the group topic', 120_000, 200)
  return { keys, ids, timeline, v1 }
}

/** Publishes version 1: class `slow` moves to slow-v1 under the schedule. */
async function publishUpgrade (nodes: MoltNode[], fleet: Fleet): Promise<void> {
  const a = nodes[0]!
  const packed = await a.bundles.packFiles(fleet.v1)
  let manifest = await createManifest({
    system: 'test', version: 1, previous: a.head().cid, createdAt: 2,
    classUpgrades: [{ oldClass: 'slow', newClass: 'slow', bundle: packed.cid, bundleSize: packed.size, schedule: { name: SCHEDULE, params: { settleMs: SETTLE_MS } } }]
  })
  for (const k of fleet.keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
  await a.publish(manifest)
}

/** A node's time down: from its `upgrading` record to its `running` one (ms). */
interface Span {
  node: number
  from: number
  to: number
}

/** The most members of one group inside a span at once, over every group. */
function mostAtOnce (spans: Span[]): number {
  // ends before starts at equal times: a span that ends as another starts does not overlap it
  const points = spans.flatMap(s => [{ t: s.from, node: s.node, d: 1 }, { t: s.to, node: s.node, d: -1 }]).sort((a, b) => a.t - b.t || a.d - b.d)
  const now = new Map<number, number>()
  let most = 0
  for (const p of points) {
    const g = groupOf(p.node)
    now.set(g, (now.get(g) ?? 0) + p.d)
    most = Math.max(most, now.get(g)!)
  }
  return most
}

interface Figures {
  n: number
  min: number
  mean: number
  p50: number
  max: number
}

function figures (xs: number[]): Figures {
  const s = [...xs].sort((a, b) => a - b)
  return { n: s.length, min: s[0]!, mean: Math.round(s.reduce((a, b) => a + b, 0) / s.length), p50: s[Math.floor(s.length / 2)]!, max: s.at(-1)! }
}

/** Each group's spans in the order its members went down. */
function rounds (spans: Span[]): Span[][] {
  return Array.from({ length: GROUPS }, (_, g) => spans.filter(s => groupOf(s.node) === g).sort((a, b) => a.from - b.from))
}

/**
 * Reported on both sides, never an input: the first go after the injection, the mean time down of
 * the k-th member of each group to go, and the handovers inside a group (one member's `running`
 * record to the next one's `upgrading` record), split at the next one's intent into `react` (it
 * announces its intent) and `go` (the settle, the acknowledgements, the re-check).
 */
function report (spans: Span[], intents: (node: number) => number[], injected: number): object {
  const groups = rounds(spans)
  const gap: number[] = []
  const react: number[] = []
  const go: number[] = []
  for (const mine of groups) {
    for (let k = 1; k < mine.length; k++) {
      const before = mine[k - 1]!
      const next = mine[k]!
      gap.push(next.from - before.to)
      const intent = intents(next.node).find(t => t >= before.to && t <= next.from)
      if (intent != null) {
        react.push(intent - before.to)
        go.push(next.from - intent)
      }
    }
  }
  return {
    firstGo: Math.round(Math.min(...spans.map(s => s.from)) - injected),
    downByRound: Array.from({ length: SIZE }, (_, k) => Math.round(groups.reduce((a, m) => a + m[k]!.to - m[k]!.from, 0) / GROUPS)),
    handover: figures(gap),
    react: figures(react),
    go: figures(go)
  }
}

describe('the simulator models a node\'s preparation', () => {
  it('prepareMs: a node announces waiting when it learns, and its SF is first asked once prepared', () => {
    const r = simulate({ nodes: 40, groupSize: 4, schedule: 'eager', crashesPerNodeHour: 0, lossRate: 0, prepareMs: { min: 3000, max: 5000 }, timeline: true })
    expect(r.upgraded).toBe(40)
    for (let i = 0; i < 40; i++) {
      const mine = r.timeline!.filter(e => e.node === i)
      const waiting = mine.find(e => e.phase === 'waiting')!
      const upgrading = mine.find(e => e.phase === 'upgrading')!
      expect(upgrading.t - waiting.t).toBeGreaterThanOrEqual(3000)
      expect(upgrading.t - waiting.t).toBeLessThanOrEqual(5000)
    }
    // without it, nothing changes: eager goes as soon as it learns
    const now = simulate({ nodes: 40, groupSize: 4, schedule: 'eager', crashesPerNodeHour: 0, lossRate: 0, timeline: true })
    for (let i = 0; i < 40; i++) {
      const mine = now.timeline!.filter(e => e.node === i)
      expect(mine.find(e => e.phase === 'upgrading')!.t).toBe(mine.find(e => e.phase === 'waiting')!.t)
    }
    expect(() => simulate({ nodes: 4, schedule: 'eager', prepareMs: { min: 5, max: 1 } })).toThrow(/prepareMs/)
  })

  it('measured samples: every duration drawn is one of them', () => {
    const samples = [1000, 1500, 7000]
    const r = simulate({ nodes: 40, groupSize: 4, schedule: 'eager', crashesPerNodeHour: 0, lossRate: 0, prepareMs: { samples }, upgradeMs: { samples: [20_000, 30_000] }, gossipDelayMs: { samples: [5, 5000] }, timeline: true })
    expect(r.upgraded).toBe(40)
    const drawn = new Set<number>()
    for (let i = 0; i < 40; i++) {
      const mine = r.timeline!.filter(e => e.node === i)
      const waiting = mine.find(e => e.phase === 'waiting')!
      const upgrading = mine.find(e => e.phase === 'upgrading')!
      const running = mine.find(e => e.phase === 'running' && e.version === 1)!
      drawn.add(upgrading.t - waiting.t)
      expect([20_000, 30_000]).toContain(running.t - upgrading.t)
      // learnt after one to ⌈log₆ 40⌉ = 3 hops of the measured delays
      expect([5, 10, 15, 5000, 5005, 5010, 10_000, 10_005, 15_000]).toContain(waiting.t)
    }
    expect([...drawn].sort((a, b) => a - b)).toEqual(samples)
    expect(() => simulate({ nodes: 4, schedule: 'eager', upgradeMs: { samples: [] } })).toThrow(/upgradeMs/)
    expect(() => simulate({ nodes: 4, schedule: 'eager', upgradeMs: { samples: [-1] } })).toThrow(/upgradeMs/)
  })
})

describe('the simulator agrees with a real 100-node run', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) }, 180_000)

  it(`${SCHEDULE}, ${GROUPS} groups of ${SIZE}: time to 90 % within ± 20 %, the most members of a group down at once equal (1)`, async () => {
    const wall = Date.now()
    const fleet = await startFleet(nodes)
    const ready = Date.now()
    const { timeline } = fleet
    timeline.length = 0
    const cpu = process.cpuUsage()
    const t0 = Date.now()
    await publishUpgrade(nodes, fleet)
    try {
      // (or one rolled back or postponed: asserted below)
      await eventually(() => nodes.every(n => n.app!.manager.current.version === 1) || timeline.some(l => l.kind === 'rolled-back' || l.kind === 'postponed'), 'every node at version 1', 420_000, 100)
    } catch (err) {
      // what the nodes still at version 0 are waiting for
      const short = (id: string): string => `#${fleet.ids.indexOf(id)}`
      console.log(`${nodes.filter(n => n.app!.manager.current.version === 1).length} of ${N} at version 1`)
      nodes.forEach((n, i) => {
        if (n.app!.manager.current.version === 1) return
        const own = n.app!.fleet.own()
        const view = n.app!.fleet.entries().map(e => `${short(e.peer)}:${e.phase}@${e.version}/${e.seq}${e.defer != null ? `>${short(e.defer.peer)}/${e.defer.seq}` : ''}`)
        console.log(`#${i} manager ${n.app!.manager.phase?.phase} own ${own.phase}@${own.version}/${own.seq}${own.defer != null ? `>${short(own.defer.peer)}/${own.defer.seq}` : ''} view ${view.join(' ')}`)
      })
      throw err
    }
    const end = Date.now()
    const cpuS = (({ user, system }) => (user + system) / 1e6)(process.cpuUsage(cpu))

    // --- the real run -----------------------------------------------------------------------
    expect(timeline.filter(l => l.kind === 'rolled-back' || l.kind === 'postponed')).toEqual([])
    // the last records in flight arrive: every view holds its replicas running version 1
    await eventually(() => nodes.every(n => {
      const view = n.app!.fleet.entries()
      return view.length === SIZE - 1 && view.every(e => e.version === 1 && e.phase === 'running')
    }), 'every view holds its replicas at version 1', 60_000, 100)
    const completed = timeline.filter(l => l.kind === 'completed')
    expect(new Set(completed.map(l => l.node)).size).toBe(N)
    const done = completed.map(l => l.t - t0).sort((a, b) => a - b)
    const realT90 = done[Math.ceil(0.9 * N) - 1]! / 1000

    const records = timeline.filter((l): l is Published => l.kind === 'published')
    const published = (i: number): Published[] => records.filter(l => l.node === i)
    const phaseAt = (i: number, phase: UpgradePhase): number => timeline.find(l => l.kind === 'phase' && l.node === i && l.phase === phase)!.t
    // down by the records (the simulator's definition), and by the manager's phases
    const recordSpans: Span[] = Array.from({ length: N }, (_, i) => {
      const own = published(i)
      const up = own.filter(r => r.phase === 'upgrading')
      expect(up, `node ${i} went down once`).toHaveLength(1)
      const back = own.find(r => r.seq > up[0]!.seq && r.phase !== 'upgrading')!
      expect(back).toMatchObject({ phase: 'running', version: 1 })
      return { node: i, from: up[0]!.at, to: back.at }
    })
    const phaseSpans: Span[] = Array.from({ length: N }, (_, i) => ({ node: i, from: phaseAt(i, 'quiescing'), to: phaseAt(i, 'admitted') }))
    for (let i = 0; i < N; i++) {
      // the record's span contains the manager's: no replica reads a node as serving while it is not
      expect(recordSpans[i]!.from).toBeLessThanOrEqual(phaseSpans[i]!.from)
      expect(recordSpans[i]!.to).toBeGreaterThanOrEqual(phaseSpans[i]!.to)
    }
    const realMaxDown = mostAtOnce(recordSpans)
    expect(mostAtOnce(phaseSpans)).toBe(realMaxDown)
    // not vacuous: in every group someone waited while a replica was down (it acknowledged it)
    for (let g = 0; g < GROUPS; g++) {
      expect(records.some(l => groupOf(l.node) === g && l.phase === 'waiting' &&
        recordSpans.some(s => s.node !== l.node && groupOf(s.node) === g && s.from <= l.at && l.at < s.to))).toBe(true)
    }

    // --- the measured inputs -------------------------------------------------------------------
    const heard = timeline.filter((l): l is Heard => l.kind === 'heard')
    const changes = new Set(records.map(l => `${l.node}/${l.seq}`))
    const delays = heard.filter(l => changes.has(`${l.from}/${l.seq}`)).map(l => l.t - l.at)
    // reported: every delivery, re-announces included
    const allDelays = figures(heard.map(l => l.t - l.at))
    // a change record (published on an update) that a replica never received as such
    let sent = 0
    let lost = 0
    const got = new Set(heard.map(l => `${l.node}/${l.from}/${l.seq}`))
    for (const p of records) {
      for (const m of members(groupOf(p.node))) {
        if (m === p.node) continue
        sent++
        if (!got.has(`${m}/${p.node}/${p.seq}`)) lost++
      }
    }
    const downFor = recordSpans.map(s => s.to - s.from)
    const prepared = Array.from({ length: N }, (_, i) => phaseAt(i, 'waiting') - phaseAt(i, 'accepted'))
    // reported, not an input (the simulator's own model: a gossip delay per hop)
    const learnt = figures(Array.from({ length: N }, (_, i) => phaseAt(i, 'accepted') - t0))

    const scenario: Scenario = {
      nodes: N,
      groupSize: SIZE,
      schedule: SCHEDULE,
      params: { settleMs: SETTLE_MS },
      contacts: 0,
      crashesPerNodeHour: 0,
      announceMs: ANNOUNCE_MS,
      gossipDelayMs: { samples: delays },
      lossRate: lost / sent,
      upgradeMs: { samples: downFor },
      prepareMs: { samples: prepared }
    }
    const sims = SEEDS.map(seed => {
      const r = simulate({ ...scenario, seed, timeline: true })
      const spans: Span[] = Array.from({ length: N }, (_, i) => {
        const mine = r.timeline!.filter(e => e.node === i)
        return { node: i, from: mine.find(e => e.phase === 'upgrading')!.t, to: mine.find(e => e.phase === 'running' && e.version === 1)!.t }
      })
      const intents = (node: number): number[] => r.timeline!.filter(e => e.node === node && e.phase === 'intent').map(e => e.t)
      return { seed, ...r, report: report(spans, intents, 0) }
    })
    const realIntents = (node: number): number[] => published(node).filter(l => l.phase === 'intent').map(l => l.at)

    console.log(JSON.stringify({
      real: {
        t90_s: realT90, t50_s: done[N / 2 - 1]! / 1000, t100_s: done.at(-1)! / 1000, maxDownPerGroup: realMaxDown,
        startS: (ready - wall) / 1000, rolloutS: (end - t0) / 1000, rolloutCpuS: Math.round(cpuS),
        ...report(recordSpans, realIntents, t0)
      },
      measured: { gossip: figures(delays), allDeliveries: allDelays, sent, lost, upgrade: figures(downFor), prepare: figures(prepared), learnt },
      sim: sims.map(r => ({ seed: r.seed, t90_s: r.t90_s, ratio: Math.round((r.t90_s ?? NaN) / realT90 * 1000) / 1000, t50_s: r.t50_s, t100_s: r.t100_s, maxDownPerGroup: r.maxDownPerGroup, ...r.report }))
    }))

    // --- agreement -----------------------------------------------------------------------------
    expect(realMaxDown).toBe(1)
    for (const r of sims) {
      expect(r.upgraded).toBe(N)
      expect(r.maxDownPerGroup, `seed ${r.seed}: most members of a group down at once`).toBe(realMaxDown)
      expect(Math.abs(r.t90_s! - realT90), `seed ${r.seed}: simulated t90 ${r.t90_s} s vs real ${realT90} s`).toBeLessThanOrEqual(0.2 * realT90)
    }
  // about 2.5 min on two otherwise idle cores; the deadlines leave room for a loaded machine
  }, 600_000)
})
