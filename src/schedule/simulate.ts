/**
 * The rollout simulator (`molt simulate`): a seeded discrete-event simulation that runs the same SF
 * code behind the same {@link FleetView} interface as a real node, against a modelled network:
 * gossip delay, message loss, node crashes and restarts, upgrade durations.
 *
 * The model (docs/schedule.md has the details and the cost model):
 *
 * - Nodes are in replica groups of `groupSize` consecutive nodes. Optionally the first `servers`
 *   nodes are of class `server` and every other node (class `client`) names `serversPerClient` of
 *   them as its servers. Every node has `contacts` peers it calls (a sample of the fleet).
 * - A node counts exactly its replicas, its servers, its contacts and the roster (decision 10).
 *   Replicas hear each other's records on their group topic (pushed: gossip delay, loss recovered
 *   by the periodic re-announce); servers, contacts and roster peers are pulled once per announce
 *   period. Periodic re-announces are accounted for in the traffic figure, not simulated one by one.
 * - Silent (crashed) peers drop out of views after `expiryMs`.
 * - Node i learns of the upgrade a gossip delay times the number of hops after the injection,
 *   announces `waiting`, and its SF is first asked after a preparation time (`prepareMs`: a real
 *   node fetches the bundle and installs the future-SO first).
 * - A node whose SF says go is down for an upgrade duration, then runs the new version (or fails,
 *   for the nodes listed in `failUpgrade`).
 *
 * The event queue is a binary heap over typed arrays; per-node state is in typed arrays; each
 * node's view holds O(k) entries, so the run is O((N·k + events) log events).
 *
 * @packageDocumentation
 */
import { BUILTIN_SCHEDULES } from './builtins.ts'
import { InvalidScenarioError, UnknownScheduleError } from './errors.ts'
import { evaluateSchedule } from './evaluate.ts'
import { mulberry32, seededRandom } from './random.ts'
import { NO_CONTROL, PHASES, type ControlState, type FleetView, type PeerStatus, type Phase, type ScheduleFunction, type ScheduleParams, type SelfView } from './types.ts'
import { MAX_STATUS_BYTES } from './record.ts'

/** A closed interval of milliseconds, drawn from uniformly. */
export interface MsRange {
  min: number
  max: number
}

/**
 * Durations measured on a real fleet (ms), drawn from at random: the simulator is given the
 * network's and the hosts' figures as they are, long tail included (a uniform range with the same
 * mean would make every delivery middling).
 */
export interface MsSamples {
  samples: readonly number[]
}

/** A duration of the model: uniform over a range, or one of measured samples. */
export type MsDistribution = MsRange | MsSamples

/** An operator action at a simulated time. */
export interface ScenarioControl {
  /** simulated ms after the injection */
  at: number
  /** what the upgrader does */
  action: 'release' | 'pause' | 'unpause' | 'resume' | 'abort'
}

/**
 * A rollout to simulate.
 */
export interface Scenario {
  /** how many nodes */
  nodes: number
  /** a built-in schedule's name, or an SF (a custom one runs under the time budget) */
  schedule: string | ScheduleFunction
  /**
   * The manifest's schedule parameters. Node ids in them (`peers`, `roster`) are simulator ids,
   * see {@link simNodeId}.
   *
   * @default {}
   */
  params?: ScheduleParams
  /** @default 1 */
  seed?: number
  /** @default 5 */
  groupSize?: number
  /**
   * Peers each node calls, counted as a sample of the fleet.
   *
   * @default 8
   */
  contacts?: number
  /**
   * Nodes of class `server` (the first ones); the others are of class `client`.
   *
   * @default 0 (every node is of class `app`)
   */
  servers?: number
  /** @default 3 */
  serversPerClient?: number
  /**
   * Delay of one gossip hop.
   *
   * @default { min: 20, max: 400 }
   */
  gossipDelayMs?: MsDistribution
  /**
   * Probability that one delivery of a record is lost (recovered by a later re-announce).
   *
   * @default 0.01
   */
  lossRate?: number
  /** @default 30 000 */
  announceMs?: number
  /** @default 3 × announceMs */
  expiryMs?: number
  /** @default { min: 20 000, max: 60 000 } */
  upgradeMs?: MsDistribution
  /**
   * Time from learning of the upgrade until the node's SF is first asked. A real node first
   * fetches the version's bundle and installs its future-SO (its manager's `accepted` →
   * `waiting`), announcing `waiting` meanwhile; its SF's `since` is when it is first asked.
   *
   * @default { min: 0, max: 0 }
   */
  prepareMs?: MsDistribution
  /**
   * Crashes per node per hour (a Poisson process per node).
   *
   * @default 0.01
   */
  crashesPerNodeHour?: number
  /** @default { min: 10 000, max: 120 000 } */
  restartMs?: MsDistribution
  /**
   * Nodes (indices) whose new version fails its health check after the upgrade.
   *
   * @default []
   */
  failUpgrade?: number[]
  /**
   * Peers no schedule counts, each publishing a record claiming `failed` and one claiming
   * `upgraded` to random nodes: the simulator delivers them and the views drop them.
   *
   * @default 0
   */
  strangers?: number
  /** @default [] */
  control?: ScenarioControl[]
  /**
   * Simulated time limit.
   *
   * @default 7 days
   */
  maxTimeMs?: number
  /** @default 50 */
  evalTimeoutMs?: number
  /**
   * Keep every phase change (for tests and analysis).
   *
   * @default false
   */
  timeline?: boolean
  /**
   * Interval of the samples behind the plot, in simulated ms.
   *
   * @default 1 000 for short runs, growing so that a run has at most ~2 000 samples
   */
  sampleMs?: number
}

/** One phase change of one node. */
export interface TimelineEntry {
  /** simulated ms */
  t: number
  node: number
  phase: Phase
  version: number
  /** the node's own record sequence number after the change */
  seq: number
}

/** One sample of the fleet. */
export interface Sample {
  /** simulated seconds */
  t: number
  upgraded: number
  upgrading: number
  waiting: number
  halted: number
  failed: number
  down: number
}

/** What a simulation reports. */
export interface SimulationResult {
  nodes: number
  /** wall-clock time of the run */
  wallMs: number
  /** simulated seconds from the injection until 50 / 90 / 100 % of nodes had upgraded; null if never */
  t50_s: number | null
  t90_s: number | null
  t100_s: number | null
  /** nodes that ended at the new version */
  upgraded: number
  /** nodes that ended halted, failed, or still waiting */
  halted: number
  failed: number
  waiting: number
  /** the most members of one replica group down for an upgrade at once */
  maxDownPerGroup: number
  /** the same, counting crashed members too */
  maxUnavailablePerGroup: number
  /** status traffic per node, bytes per second: signed-record payload sent plus received */
  statusBytesPerNodeS: number
  /** records one view holds: mean and max */
  viewEntriesMean: number
  viewEntriesMax: number
  /** estimated memory of one view, in KB (largest) */
  viewKb: number
  /** encoded size of one signed status record */
  recordBytes: number
  /** records of strangers delivered and dropped by views */
  strangerRecordsDropped: number
  /** evaluations of the SF, and how many were cut off (threw, timed out, bad answer) */
  evaluations: number
  sfErrors: number
  /** events processed */
  events: number
  /** the end of the simulation, simulated seconds */
  endS: number
  samples: Sample[]
  /** every phase change, when `timeline` was asked for */
  timeline?: TimelineEntry[]
  /** each node's servers (indices), when `timeline` was asked for */
  serversOf?: number[][]
  /** each node's replica group, when `timeline` was asked for */
  groupOf?: Int32Array
}

/** The peer id the simulator gives node `i` of `n`. */
export function simNodeId (i: number, n: number): string {
  return `n${String(i).padStart(String(Math.max(n - 1, 0)).length, '0')}`
}

// event kinds
const LEARN = 1
const EVAL = 2
const DELIVER = 3
const DONE = 4
const CRASH = 5
const RESTART = 6
const CONTROL = 7
const SAMPLE = 8
const STRANGER = 9

// phase codes (PHASES order)
const P_RUNNING = 0
const P_WAITING = 1
const P_INTENT = 2
const P_UPGRADING = 3
const P_FAILED = 4
const P_HALTED = 5

// edge kinds
const E_REPLICA = 0
const E_SERVER = 1
const E_CONTACT = 2
const E_ROSTER = 3

/** A binary min-heap of events over typed arrays. */
class EventQueue {
  private time = new Float64Array(1 << 16)
  private kind = new Uint8Array(1 << 16)
  private a = new Int32Array(1 << 16)
  private b = new Int32Array(1 << 16)
  size = 0
  t = 0
  k = 0
  x = 0
  y = 0

  private grow (): void {
    const n = this.time.length * 2
    const time = new Float64Array(n); time.set(this.time); this.time = time
    const kind = new Uint8Array(n); kind.set(this.kind); this.kind = kind
    const a = new Int32Array(n); a.set(this.a); this.a = a
    const b = new Int32Array(n); b.set(this.b); this.b = b
  }

  push (t: number, k: number, x: number, y: number): void {
    if (this.size === this.time.length) this.grow()
    let i = this.size++
    const { time, kind, a, b } = this
    while (i > 0) {
      const p = (i - 1) >> 1
      if (time[p]! <= t) break
      time[i] = time[p]!; kind[i] = kind[p]!; a[i] = a[p]!; b[i] = b[p]!
      i = p
    }
    time[i] = t; kind[i] = k; a[i] = x; b[i] = y
  }

  /** Pops the earliest event into t, k, x, y. */
  pop (): void {
    const { time, kind, a, b } = this
    this.t = time[0]!; this.k = kind[0]!; this.x = a[0]!; this.y = b[0]!
    const n = --this.size
    if (n === 0) return
    const lt = time[n]!; const lk = kind[n]!; const la = a[n]!; const lb = b[n]!
    let i = 0
    while (true) {
      let c = 2 * i + 1
      if (c >= n) break
      if (c + 1 < n && time[c + 1]! < time[c]!) c++
      if (time[c]! >= lt) break
      time[i] = time[c]!; kind[i] = kind[c]!; a[i] = a[c]!; b[i] = b[c]!
      i = c
    }
    time[i] = lt; kind[i] = lk; a[i] = la; b[i] = lb
  }
}

/** A published record, compactly. */
interface SimRecord {
  seq: number
  version: number
  target: number
  phase: number
  healthy: boolean
  at: number
  deferPeer: number
  deferSeq: number
}

/** A validated {@link MsDistribution}: its bounds, and the samples when it is measured. */
interface Distribution {
  min: number
  max: number
  samples?: readonly number[]
}

function distribution (r: MsDistribution | undefined, fallback: MsRange, what: string): Distribution {
  const v = r ?? fallback
  if ('samples' in v) {
    const samples = v.samples
    if (!Array.isArray(samples) || samples.length === 0 || !samples.every(x => typeof x === 'number' && Number.isFinite(x) && x >= 0)) {
      throw new InvalidScenarioError(`${what}: expected samples ≥ 0, at least one`)
    }
    let min = Infinity
    let max = 0
    for (const x of samples) { min = Math.min(min, x); max = Math.max(max, x) }
    return { min, max, samples: [...samples] }
  }
  if (!Number.isFinite(v.min) || !Number.isFinite(v.max) || v.min < 0 || v.max < v.min) {
    throw new InvalidScenarioError(`${what}: expected 0 ≤ min ≤ max`)
  }
  return { min: v.min, max: v.max }
}

function positiveInt (v: number | undefined, fallback: number, what: string, min = 1): number {
  const n = v ?? fallback
  if (!Number.isSafeInteger(n) || n < min) throw new InvalidScenarioError(`${what}: expected an integer ≥ ${min}`)
  return n
}

/**
 * The encoded size of a typical signed status record: measured 193 bytes with an ed25519 peer id,
 * one tag and no deferral, 263 with a deferral.
 */
const RECORD_BYTES = 200

/**
 * Runs a simulation to its end (every node upgraded, nothing left to happen, or `maxTimeMs`).
 * Deterministic for a given scenario.
 */
export function simulate (scenario: Scenario): SimulationResult {
  const wallStart = performance.now()
  const N = positiveInt(scenario.nodes, 0, 'nodes')
  if (N > 10_000_000) throw new InvalidScenarioError('nodes: at most 10 000 000')
  const seed = scenario.seed ?? 1
  const params: ScheduleParams = Object.freeze({ ...(scenario.params ?? {}) })
  const groupSize = positiveInt(scenario.groupSize, 5, 'groupSize')
  const nContacts = positiveInt(scenario.contacts, 8, 'contacts', 0)
  const nServers = positiveInt(scenario.servers, 0, 'servers', 0)
  if (nServers >= N && nServers > 0) throw new InvalidScenarioError('servers: fewer than nodes')
  const perClient = Math.min(positiveInt(scenario.serversPerClient, 3, 'serversPerClient', 0), nServers)
  const delay = distribution(scenario.gossipDelayMs, { min: 20, max: 400 }, 'gossipDelayMs')
  const loss = scenario.lossRate ?? 0.01
  if (!(loss >= 0 && loss < 1)) throw new InvalidScenarioError('lossRate: in [0, 1)')
  const announce = scenario.announceMs ?? 30_000
  if (!(announce > 0)) throw new InvalidScenarioError('announceMs: > 0')
  const expiry = scenario.expiryMs ?? 3 * announce
  const upgradeMs = distribution(scenario.upgradeMs, { min: 20_000, max: 60_000 }, 'upgradeMs')
  const prepareMs = distribution(scenario.prepareMs, { min: 0, max: 0 }, 'prepareMs')
  const restartMs = distribution(scenario.restartMs, { min: 10_000, max: 120_000 }, 'restartMs')
  const crashRate = (scenario.crashesPerNodeHour ?? 0.01) / 3_600_000
  if (!(crashRate >= 0)) throw new InvalidScenarioError('crashesPerNodeHour: ≥ 0')
  const maxTime = scenario.maxTimeMs ?? 7 * 24 * 3_600_000
  const evalTimeoutMs = scenario.evalTimeoutMs ?? 50
  const keepTimeline = scenario.timeline === true
  let sf: ScheduleFunction
  let guard: boolean
  // the built-ins that read no record need no evaluation when one arrives
  let reactive = true
  if (typeof scenario.schedule === 'function') {
    sf = scenario.schedule
    guard = true
  } else {
    const builtin = BUILTIN_SCHEDULES[scenario.schedule]
    if (builtin == null) throw new UnknownScheduleError(`schedule: "${scenario.schedule}" is not built in (${Object.keys(BUILTIN_SCHEDULES).join(', ')})`)
    sf = builtin
    guard = false
    reactive = scenario.schedule !== 'eager' && scenario.schedule !== 'gradual'
  }

  const rnd = mulberry32(seed ^ 0x5bd1e995)
  /** one draw: uniform over a range, or one of the samples (one number of the stream either way) */
  const draw = (r: Distribution): number => r.samples != null
    ? r.samples[Math.min(r.samples.length - 1, Math.floor(rnd() * r.samples.length))]!
    : r.min + (r.max - r.min) * rnd()
  const target = 1

  // --- nodes ------------------------------------------------------------------------------------
  const names: string[] = new Array<string>(N)
  for (let i = 0; i < N; i++) names[i] = simNodeId(i, N)
  const indexOf = (peer: string): number => {
    if (typeof peer !== 'string' || peer.length < 2 || peer[0] !== 'n') return -1
    const i = Number(peer.slice(1))
    return Number.isInteger(i) && i >= 0 && i < N && names[i] === peer ? i : -1
  }
  const classNames = nServers > 0 ? ['server', 'client'] : ['app']
  const klass = new Uint8Array(N)
  if (nServers > 0) klass.fill(1, nServers)
  // groups: servers among themselves, clients among themselves
  const groupOf = new Int32Array(N)
  const groupStart: number[] = []
  {
    let g = -1
    for (let i = 0; i < N; i++) {
      const base = i < nServers ? 0 : nServers
      if ((i - base) % groupSize === 0) { g++; groupStart.push(i) }
      groupOf[i] = g
    }
    groupStart.push(N)
  }
  const nGroups = groupStart.length - 1
  const groupEnd = (g: number): number => Math.min(groupStart[g + 1]!, groupStart[g]! + groupSize)
  const groupTags: Array<Readonly<Record<string, string>>> = []
  for (let g = 0; g < nGroups; g++) groupTags.push(Object.freeze({ group: `g${g}` }))

  const version = new Int32Array(N)
  const phase = new Uint8Array(N)
  const seq = new Int32Array(N)
  const since = new Float64Array(N).fill(Infinity)
  const intentSeq = new Int32Array(N)
  const intentAt = new Float64Array(N)
  const deferPeer = new Int32Array(N).fill(-1)
  const deferSeq = new Int32Array(N)
  const alive = new Uint8Array(N).fill(1)
  const downSince = new Float64Array(N)
  const healthy = new Uint8Array(N).fill(1)
  const upgradedOnce = new Uint8Array(N)
  const scheduledEval = new Float64Array(N).fill(Infinity)
  const doneAt = new Float64Array(N).fill(Infinity)
  const failing = new Uint8Array(N)
  for (const f of scenario.failUpgrade ?? []) {
    if (!Number.isInteger(f) || f < 0 || f >= N) throw new InvalidScenarioError(`failUpgrade: ${f} is not a node index`)
    failing[f] = 1
  }
  const history: SimRecord[][] = new Array<SimRecord[]>(N)

  // --- who counts whom: out-edges (CSR) and their reverse ------------------------------------
  const rosterSet = new Set((typeof params.roster === 'string' ? params.roster.split(/[\s,]+/) : []).map(indexOf).filter(i => i >= 0))
  const outStart = new Int32Array(N + 1)
  const peersTmp: number[] = []
  const kindsTmp: number[] = []
  const serversOf: number[][] = new Array<number[]>(N)
  for (let i = 0; i < N; i++) {
    outStart[i] = peersTmp.length
    const mine = new Set<number>([i])
    const g = groupOf[i]!
    for (let j = groupStart[g]!; j < groupEnd(g); j++) {
      if (j !== i) { peersTmp.push(j); kindsTmp.push(E_REPLICA); mine.add(j) }
    }
    const servers: number[] = []
    if (klass[i] === 1) {
      while (servers.length < perClient) {
        const s = Math.floor(rnd() * nServers)
        if (!servers.includes(s)) servers.push(s)
      }
      for (const s of servers) {
        if (!mine.has(s)) { peersTmp.push(s); kindsTmp.push(E_SERVER); mine.add(s) }
      }
    }
    serversOf[i] = servers
    for (const r of rosterSet) {
      if (!mine.has(r)) { peersTmp.push(r); kindsTmp.push(E_ROSTER); mine.add(r) }
    }
    const want = Math.min(nContacts, N - mine.size)
    for (let c = 0, tries = 0; c < want && tries < want * 20; tries++) {
      const j = Math.floor(rnd() * N)
      if (!mine.has(j)) { peersTmp.push(j); kindsTmp.push(E_CONTACT); mine.add(j); c++ }
    }
  }
  outStart[N] = peersTmp.length
  const E = peersTmp.length
  const edgePeer = Int32Array.from(peersTmp)
  const edgeKind = Uint8Array.from(kindsTmp)
  peersTmp.length = 0
  kindsTmp.length = 0
  const edgeOwner = new Int32Array(E)
  for (let i = 0; i < N; i++) edgeOwner.fill(i, outStart[i]!, outStart[i + 1]!)
  const recvSeq = new Int32Array(E)
  const heardAt = new Float64Array(E)
  // pulls happen once per announce period, at a fixed phase per edge
  const pullPhase = new Float32Array(E)
  for (let e = 0; e < E; e++) pullPhase[e] = rnd() * announce
  const inStart = new Int32Array(N + 1)
  for (let e = 0; e < E; e++) inStart[edgePeer[e]! + 1]!++
  for (let i = 0; i < N; i++) inStart[i + 1]! += inStart[i]!
  const inEdge = new Int32Array(E)
  {
    const fill = inStart.slice(0, N)
    for (let e = 0; e < E; e++) inEdge[fill[edgePeer[e]!]!++] = e
  }

  // --- the queue and the record keeping ------------------------------------------------------
  const q = new EventQueue()
  let now = 0
  let control: ControlState = NO_CONTROL
  const timeline: TimelineEntry[] = []
  const recordBytes = Math.min(RECORD_BYTES, MAX_STATUS_BYTES)
  let pushedCopies = 0
  let publishes = 0
  let strangerDropped = 0
  let evaluations = 0
  let sfErrors = 0
  let events = 0

  let upgradedCount = 0
  let upgradingCount = 0
  let haltedCount = 0
  let failedCount = 0
  let crashedCount = 0
  const downInGroup = new Int32Array(nGroups)
  const unavailableInGroup = new Int32Array(nGroups)
  let maxDown = 0
  let maxUnavailable = 0
  const crossing: Array<number | null> = [null, null, null]
  const marks = [0.5, 0.9, 1]

  const groupDelta = (i: number, down: number, unavailable: number): void => {
    const g = groupOf[i]!
    if (down !== 0) { downInGroup[g]! += down; if (downInGroup[g]! > maxDown) maxDown = downInGroup[g]! }
    if (unavailable !== 0) { unavailableInGroup[g]! += unavailable; if (unavailableInGroup[g]! > maxUnavailable) maxUnavailable = unavailableInGroup[g]! }
  }

  const setPhase = (i: number, p: number): void => {
    const old = phase[i]!
    if (old === p) return
    if (old === P_UPGRADING) { upgradingCount--; groupDelta(i, -1, alive[i] === 1 ? -1 : 0) }
    if (old === P_HALTED) haltedCount--
    if (old === P_FAILED) failedCount--
    phase[i] = p
    if (p === P_UPGRADING) { upgradingCount++; groupDelta(i, 1, alive[i] === 1 ? 1 : 0) }
    if (p === P_HALTED) haltedCount++
    if (p === P_FAILED) failedCount++
  }

  const delayOnce = (): number => draw(delay)
  /** gossip delay, plus whole re-announce periods for each lost delivery */
  const pushDelay = (): number => {
    let d = delayOnce()
    while (loss > 0 && rnd() < loss) d += announce
    return d
  }
  const pullTime = (e: number, t: number): number => {
    const ph = pullPhase[e]!
    const k = Math.ceil((t - ph) / announce)
    return ph + Math.max(k, 0) * announce + 2 * delayOnce()
  }

  const publish = (j: number): void => {
    seq[j]!++
    const rec: SimRecord = {
      seq: seq[j]!,
      version: version[j]!,
      target: since[j]! === Infinity ? version[j]! : Math.max(target, version[j]!),
      phase: phase[j]!,
      healthy: healthy[j] === 1,
      at: now,
      deferPeer: deferPeer[j]!,
      deferSeq: deferSeq[j]!
    }
    ;(history[j] ??= []).push(rec)
    publishes++
    if (keepTimeline) timeline.push({ t: now, node: j, phase: PHASES[phase[j]!] as Phase, version: version[j]!, seq: seq[j]! })
    for (let x = inStart[j]!; x < inStart[j + 1]!; x++) {
      const e = inEdge[x]!
      if (edgeKind[e] === E_REPLICA) {
        pushedCopies++
        q.push(now + pushDelay(), DELIVER, e, rec.seq)
      } else {
        q.push(pullTime(e, now), DELIVER, e, rec.seq)
      }
    }
  }

  const scheduleEval = (i: number, t: number): void => {
    if (t < now) t = now
    const s = scheduledEval[i]!
    if (t < s || s < now) {
      scheduledEval[i] = t
      q.push(t, EVAL, i, 0)
    }
  }

  // --- the view a node's SF sees ---------------------------------------------------------------
  const statusOf = (e: number): PeerStatus | undefined => {
    const s = recvSeq[e]!
    if (s === 0) return undefined
    const j = edgePeer[e]!
    // alive peers re-announce every period: silent ones expire
    if (alive[j] === 0 && now - Math.max(downSince[j]!, heardAt[e]!) > expiry) return undefined
    const rec = history[j]![s - 1]!
    return {
      peer: names[j]!,
      class: classNames[klass[j]!]!,
      version: rec.version,
      target: rec.target,
      phase: PHASES[rec.phase] as Phase,
      healthy: rec.healthy,
      tags: groupTags[groupOf[j]!]!,
      seq: rec.seq,
      at: rec.at,
      ...(rec.deferPeer >= 0 ? { defer: { peer: names[rec.deferPeer]!, seq: rec.deferSeq } } : {}),
      source: 'record',
      heardAt: heardAt[e]!,
      called: edgeKind[e] === E_SERVER
    }
  }
  const viewOf = (i: number): FleetView => ({
    get (peer: string): PeerStatus | undefined {
      const j = indexOf(peer)
      if (j < 0) return undefined
      for (let e = outStart[i]!; e < outStart[i + 1]!; e++) {
        if (edgePeer[e] === j) return statusOf(e)
      }
      return undefined
    },
    contacts (): PeerStatus[] {
      const out: PeerStatus[] = []
      for (let e = outStart[i]!; e < outStart[i + 1]!; e++) {
        const k = edgeKind[e]
        if (k === E_CONTACT || k === E_ROSTER) {
          const s = statusOf(e)
          if (s != null) out.push(s)
        }
      }
      return out
    },
    control
  })
  const replicaNames = (i: number): string[] => {
    const g = groupOf[i]!
    const out: string[] = []
    for (let j = groupStart[g]!; j < groupEnd(g); j++) if (j !== i) out.push(names[j]!)
    return out
  }
  const EMPTY = Object.freeze({})
  const randoms: Array<ReturnType<typeof seededRandom> | undefined> = new Array(N)
  const replicaCache: Array<string[] | undefined> = new Array(N)
  const serverCache: Array<string[] | undefined> = new Array(N)

  const evaluate = (i: number): void => {
    const p = phase[i]!
    if (alive[i] === 0 || !(p === P_WAITING || p === P_INTENT || p === P_HALTED) || version[i]! >= target) return
    // still fetching the bundle and installing the future-SO: the SF is not asked yet
    if (now < since[i]!) { scheduleEval(i, since[i]!); return }
    evaluations++
    const self: SelfView = {
      peer: names[i]!,
      class: classNames[klass[i]!]!,
      version: version[i]!,
      target,
      phase: PHASES[p] as Phase,
      seq: seq[i]!,
      ...(p === P_INTENT ? { intentSeq: intentSeq[i]!, intentAt: intentAt[i]! } : {}),
      since: since[i]!,
      tags: groupTags[groupOf[i]!]!,
      replicas: (replicaCache[i] ??= Object.freeze(replicaNames(i)) as string[]),
      servers: (serverCache[i] ??= Object.freeze(serversOf[i]!.map(s => names[s]!)) as string[]),
      observers: EMPTY
    }
    const { decision: d, error } = evaluateSchedule(sf, { self, view: viewOf(i), params, now, random: (randoms[i] ??= seededRandom(seed, names[i]!)) }, { guard, timeoutMs: evalTimeoutMs })
    if (error != null) sfErrors++
    if (d.decision === 'upgrade') {
      setPhase(i, P_UPGRADING)
      deferPeer[i] = -1
      publish(i)
      q.push(now + draw(upgradeMs), DONE, i, seq[i]!)
      return
    }
    let np = p
    if (d.halt != null) np = P_HALTED
    else if (d.intent === true) np = P_INTENT
    else if (d.intent === false || p === P_HALTED) np = P_WAITING
    const dp = d.defer != null ? indexOf(d.defer.peer) : -1
    const ds = d.defer != null && dp >= 0 ? d.defer.seq : 0
    const changed = np !== p || dp !== deferPeer[i] || ds !== deferSeq[i]
    if (changed) {
      setPhase(i, np)
      deferPeer[i] = dp
      deferSeq[i] = ds
      const entering = np === P_INTENT && p !== P_INTENT
      publish(i)
      if (entering) { intentSeq[i] = seq[i]!; intentAt[i] = now }
    }
    if (d.retryAt != null && d.retryAt > now) scheduleEval(i, d.retryAt)
  }

  // --- initial events ----------------------------------------------------------------------------
  const hops = Math.max(1, Math.ceil(Math.log(N) / Math.log(6)))
  // everyone's record at version 0 (sequence 1) is known before the injection
  for (let i = 0; i < N; i++) {
    seq[i] = 1
    history[i] = [{ seq: 1, version: 0, target: 0, phase: P_RUNNING, healthy: true, at: 0, deferPeer: -1, deferSeq: 0 }]
  }
  for (let e = 0; e < E; e++) { recvSeq[e] = 1; heardAt[e] = 0 }
  for (let i = 0; i < N; i++) {
    // between one fast hop and `hops` slow ones; with measured delays, 1 … hops hops of them
    let learn: number
    if (delay.samples == null) {
      learn = delay.min + (delay.max * hops - delay.min) * rnd()
    } else {
      learn = 0
      for (let h = 1 + Math.floor(rnd() * hops); h > 0; h--) learn += delayOnce()
    }
    q.push(learn, LEARN, i, 0)
    if (crashRate > 0) {
      const t = -Math.log(1 - rnd()) / crashRate
      if (t < maxTime) q.push(t, CRASH, i, 0)
    }
  }
  const controls = [...(scenario.control ?? [])].sort((a, b) => a.at - b.at)
  controls.forEach((c, k) => {
    if (!Number.isFinite(c.at) || c.at < 0) throw new InvalidScenarioError('control: at ≥ 0')
    q.push(c.at, CONTROL, k, 0)
  })
  const strangers = positiveInt(scenario.strangers, 0, 'strangers', 0)
  for (let s = 0; s < strangers; s++) {
    q.push(rnd() * 60_000, STRANGER, Math.floor(rnd() * N), s)
  }
  const sampleMs = scenario.sampleMs ?? 1000
  const samples: Sample[] = []
  q.push(0, SAMPLE, 0, 0)
  let sampleEvery = sampleMs

  // --- the loop ---------------------------------------------------------------------------------
  while (q.size > 0) {
    q.pop()
    if (q.t > maxTime) break
    now = q.t
    events++
    const x = q.x
    switch (q.k) {
      case LEARN:
        if (alive[x] === 0) { q.push(now + announce, LEARN, x, 0); break }
        // the SF is first asked once the node has prepared (no draw when there is nothing to
        // prepare, so scenarios without it keep their random streams)
        since[x] = now + (prepareMs.max > 0 ? draw(prepareMs) : 0)
        setPhase(x, P_WAITING)
        publish(x)
        scheduleEval(x, since[x]!)
        break
      case EVAL:
        if (scheduledEval[x] !== now) break
        scheduledEval[x] = Infinity
        evaluate(x)
        break
      case DELIVER: {
        const owner = edgeOwner[x]!
        if (alive[owner] === 0) break
        if (q.y > recvSeq[x]!) {
          recvSeq[x] = q.y
          heardAt[x] = now
          if (reactive) scheduleEval(owner, now)
        }
        break
      }
      case DONE:
        if (alive[x] === 0 || phase[x] !== P_UPGRADING || seq[x] !== q.y) break
        if (failing[x] === 1) {
          version[x] = target
          healthy[x] = 0
          setPhase(x, P_FAILED)
        } else {
          version[x] = target
          setPhase(x, P_RUNNING)
        }
        if (upgradedOnce[x] === 0) {
          upgradedOnce[x] = 1
          upgradedCount++
          doneAt[x] = now
          for (let m = 0; m < marks.length; m++) {
            if (crossing[m] == null && upgradedCount >= Math.ceil(marks[m]! * N)) crossing[m] = now
          }
        }
        publish(x)
        break
      case CRASH: {
        if (alive[x] === 0) break
        alive[x] = 0
        crashedCount++
        downSince[x] = now
        groupDelta(x, 0, phase[x] === P_UPGRADING ? 0 : 1)
        q.push(now + draw(restartMs), RESTART, x, 0)
        break
      }
      case RESTART: {
        alive[x] = 1
        crashedCount--
        groupDelta(x, 0, phase[x] === P_UPGRADING ? 0 : -1)
        if (crashRate > 0) {
          const t = now + -Math.log(1 - rnd()) / crashRate
          if (t < maxTime) q.push(t, CRASH, x, 0)
        }
        if (phase[x] === P_UPGRADING) {
          // the upgrade is restartable: it runs again from its last step
          publish(x)
          q.push(now + draw(upgradeMs) / 2, DONE, x, seq[x]!)
        } else {
          if (phase[x] === P_INTENT) setPhase(x, P_WAITING)
          publish(x)
          scheduleEval(x, now)
        }
        // a restarted node pulls the records it counts
        for (let e = outStart[x]!; e < outStart[x + 1]!; e++) {
          const j = edgePeer[e]!
          if (alive[j] === 1) q.push(now + 2 * delayOnce(), DELIVER, e, seq[j]!)
        }
        break
      }
      case CONTROL: {
        const c = controls[x]!
        const next = { ...control }
        if (c.action === 'release') next.released = true
        else if (c.action === 'pause') next.paused = true
        else if (c.action === 'unpause') next.paused = false
        else if (c.action === 'abort') next.aborted = true
        else if (c.action === 'resume') { next.resumedAt = now; next.paused = false }
        control = Object.freeze(next)
        for (let i = 0; i < N; i++) scheduleEval(i, now + delayOnce() * hops)
        break
      }
      case STRANGER:
        // a stranger's record reaches a node: it is in no view, so it is dropped unread
        strangerDropped++
        break
      case SAMPLE: {
        samples.push({
          t: now / 1000,
          upgraded: upgradedCount,
          upgrading: upgradingCount,
          waiting: N - upgradedCount - upgradingCount - haltedCount - failedCount,
          halted: haltedCount,
          failed: failedCount,
          down: crashedCount
        })
        if (samples.length >= 2000 && samples.length % 2000 === 0) sampleEvery *= 2
        // keep sampling while anything else can still happen
        if (q.size > 0 && upgradedCount < N) q.push(now + sampleEvery, SAMPLE, 0, 0)
        break
      }
    }
    if (upgradedCount === N && upgradingCount === 0 && q.k !== SAMPLE) {
      samples.push({ t: now / 1000, upgraded: upgradedCount, upgrading: 0, waiting: 0, halted: 0, failed: failedCount, down: crashedCount })
      break
    }
  }

  const end = Math.max(now, 1)
  // status traffic, as the fleetview bench measures it on real nodes: signed-record payload bytes
  // sent and received (first copies; gossipsub's duplicates and control frames are not in it).
  // Every node re-announces once per period to its group and pulls its other counted peers once
  // per period (each pull: a reply sent by one node and received by another); changes are
  // published at once on top of that.
  let pullEdges = 0
  for (let e = 0; e < E; e++) {
    if (edgeKind[e] !== E_REPLICA) pullEdges++
  }
  const periods = end / announce
  let groupListeners = 0
  for (let g = 0; g < nGroups; g++) {
    const size = groupEnd(g) - groupStart[g]!
    groupListeners += size * size
  }
  const bytes = recordBytes * (publishes + pushedCopies) +
    recordBytes * groupListeners * periods +
    2 * recordBytes * pullEdges * periods
  let maxOut = 0
  for (let i = 0; i < N; i++) maxOut = Math.max(maxOut, outStart[i + 1]! - outStart[i]!)
  const round = (v: number | null, d = 1): number | null => v == null ? null : Math.round(v * 10 ** d) / 10 ** d
  let waiting = 0
  for (let i = 0; i < N; i++) if (phase[i] === P_WAITING || phase[i] === P_INTENT) waiting++
  const result: SimulationResult = {
    nodes: N,
    wallMs: Math.round(performance.now() - wallStart),
    t50_s: round(crossing[0] == null ? null : crossing[0] / 1000),
    t90_s: round(crossing[1] == null ? null : crossing[1] / 1000),
    t100_s: round(crossing[2] == null ? null : crossing[2] / 1000),
    upgraded: upgradedCount,
    halted: haltedCount,
    failed: failedCount,
    waiting,
    maxDownPerGroup: maxDown,
    maxUnavailablePerGroup: maxUnavailable,
    statusBytesPerNodeS: round(bytes / N / (end / 1000)) as number,
    viewEntriesMean: round(E / N, 2) as number,
    viewEntriesMax: maxOut,
    viewKb: round(maxOut * (recordBytes + 96) / 1024, 2) as number,
    recordBytes,
    strangerRecordsDropped: strangerDropped,
    evaluations,
    sfErrors,
    events,
    endS: round(end / 1000) as number,
    samples
  }
  if (keepTimeline) {
    result.timeline = timeline
    result.serversOf = serversOf
    result.groupOf = groupOf
  }
  return result
}

/**
 * An SVG plot of a simulation: nodes upgraded, upgrading (down), waiting, halted and failed over
 * simulated time.
 */
export function plotSvg (result: SimulationResult, title = `${result.nodes} nodes`): string {
  const W = 800
  const H = 420
  const L = 70
  const R = 150
  const T = 40
  const B = 50
  const samples = result.samples
  const tMax = Math.max(samples.at(-1)?.t ?? 1, 1e-3)
  const yMax = Math.max(result.nodes, 1)
  const x = (t: number): string => (L + (W - L - R) * t / tMax).toFixed(1)
  const y = (v: number): string => (T + (H - T - B) * (1 - v / yMax)).toFixed(1)
  const series: Array<[keyof Sample, string, string]> = [
    ['upgraded', '#2a9d3c', 'new version'],
    ['waiting', '#4a6fd1', 'old version, waiting'],
    ['upgrading', '#e08a00', 'upgrading (down)'],
    ['halted', '#b0309a', 'halted'],
    ['failed', '#d12c2c', 'failed']
  ]
  const esc = (s: string): string => s.replace(/[<>&"]/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c] as string)
  const lines: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="24" font-size="15">${esc(title)}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`
  ]
  for (let k = 0; k <= 4; k++) {
    const v = yMax * k / 4
    lines.push(`<text x="${L - 6}" y="${y(v)}" text-anchor="end" dominant-baseline="middle">${Math.round(v)}</text>`)
    const t = tMax * k / 4
    lines.push(`<text x="${x(t)}" y="${H - B + 18}" text-anchor="middle">${t.toFixed(t >= 100 ? 0 : 1)}</text>`)
  }
  lines.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">simulated seconds</text>`)
  lines.push(`<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${(T + H - B) / 2})">nodes</text>`)
  series.forEach(([key, color, label], k) => {
    const points = samples.map(s => `${x(s.t)},${y(s[key])}`).join(' ')
    lines.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${points}"/>`)
    lines.push(`<rect x="${W - R + 12}" y="${T + k * 20}" width="12" height="12" fill="${color}"/>`)
    lines.push(`<text x="${W - R + 30}" y="${T + k * 20 + 10}">${esc(label)}</text>`)
  })
  lines.push('</svg>')
  return lines.join('\n') + '\n'
}
