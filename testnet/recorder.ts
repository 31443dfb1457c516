/**
 * Everything the launcher learns during a run, with timestamps: each member's statuses and
 * lifecycle events, every client op, the scenario's marks (publish, faults, quiesce), and a
 * sample of the fleet every `sampleMs`. The live view, the summary and the report read it.
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import type { FleetListener, MemberHandle } from './fleet.ts'
import type { MemberEvent, MemberStatus, OpSample, Role } from './ipc.ts'

/** What is known of one member. */
export interface MemberTrack {
  name: string
  role: Role
  peerId?: string
  status?: MemberStatus
  events: MemberEvent[]
  /** first time it reported each manifest version */
  manifestAt: Map<number, number>
  /** when it reached each system version */
  reachedAt: Map<number, number>
  /** the highest peak RSS it reported, MB */
  peakRssMb: number
  /** its RSS over time: [ms since the epoch, MB] */
  rss: Array<[number, number]>
  /** its process's CPU time over time: [ms since the epoch, CPU ms since the process started] */
  cpu: Array<[number, number]>
  /** killed / restarted / exited, for the timeline */
  lifecycle: Array<{ at: number, what: 'killed' | 'restarted' | 'exited' | 'started' | 'stopped', detail?: string }>
  alive: boolean
}

/** A sample of the fleet. */
export interface FleetSample {
  at: number
  /** chord nodes per system version */
  nodes: Record<number, number>
  /** clients per system version */
  clients: Record<number, number>
  /** nodes between quiescing and admitted */
  upgrading: number
  /** nodes whose rollout is halted (fork proof, or a halted status record) */
  halted: number
}

/** The scenario's marks, ms since the epoch. */
export interface Marks {
  start: number
  ready?: number
  ringStable?: number
  steadyStart?: number
  publish?: number
  /** every member accepted the target manifest */
  propagated?: number
  /** every chord node at the target */
  nodesUpgraded?: number
  /** every member at the target */
  allUpgraded?: number
  workloadStop?: number
  verified?: number
  end?: number
  partition?: number
  heal?: number
  /** the partition's two sides (member names) */
  sides?: { a: string[], b: string[] }
  kills: Array<{ name: string, at: number, restartedAt?: number }>
  /** --control: restarts of nodes one at a time */
  restarts: Array<{ name: string, at: number, readyAt?: number }>
  /** each publish (one per system version) */
  publishes: Array<{ version: number, at: number, through: string, cid: string }>
}

/** Manager phases of an accepted upgrade that has not begun: the node still serves its version. */
export const WAITING_PHASES: ReadonlySet<string> = new Set(['accepted', 'fetched', 'future-installed', 'waiting'])

/** Manager phases in which a node is out of service for its upgrade (quiescing up to its check). */
export const UPGRADING_PHASES: ReadonlySet<string> = new Set(['quiescing', 'stopped', 'transforming', 'checking'])

/** Whether a member's rollout is halted: a fork proof, or a halted status record. */
export function isHalted (status: MemberStatus): boolean {
  return status.halted || status.fleetPhase === 'halted'
}

/** The number of ops counted in `Recorder.totals`. */
export function opTotal (totals: Recorder['totals']): number {
  return totals.ok + totals.failed + totals.refused + totals.untyped
}

/** Records a run. */
export class Recorder implements FleetListener {
  readonly members = new Map<string, MemberTrack>()
  /** every client op, in the order they arrived */
  readonly opLog: OpSample[] = []
  readonly samples: FleetSample[] = []
  /** the machine's busy CPU time (every process, the launcher's own included), with each sample: [ms since the epoch, ms] */
  readonly machineCpu: Array<[number, number]> = []
  readonly marks: Marks = { start: Date.now(), kills: [], restarts: [], publishes: [] }
  /** the target system version (for progress) */
  target = 1
  /**
   * Totals of ops by outcome, kept as they come because the live view and the scenario read them
   * every few hundred ms; anything finer (failures by name, by kind) is derived from `opLog` once,
   * by the summary.
   */
  readonly totals = { ok: 0, failed: 0, refused: 0, untyped: 0 }
  /** a line for the view when something notable happens */
  readonly notes: Array<{ at: number, text: string }> = []

  track (name: string, role: Role): MemberTrack {
    let t = this.members.get(name)
    if (t == null) {
      t = { name, role, events: [], manifestAt: new Map(), reachedAt: new Map(), peakRssMb: 0, rss: [], cpu: [], lifecycle: [], alive: false }
      this.members.set(name, t)
    }
    return t
  }

  note (text: string): void {
    this.notes.push({ at: Date.now(), text })
  }

  status (member: MemberHandle, status: MemberStatus): void {
    const t = this.track(member.name, member.role)
    if (member.peerId != null) t.peerId = member.peerId
    t.status = status
    t.alive = member.alive
    t.peakRssMb = Math.max(t.peakRssMb, status.peakRssMb)
    if (status.rssMb > 0) t.rss.push([status.at, Math.round(status.rssMb * 10) / 10])
    if (status.cpuMs > 0) t.cpu.push([status.at, status.cpuMs])
    if (!t.manifestAt.has(status.head)) t.manifestAt.set(status.head, status.at)
    if (!t.reachedAt.has(status.version)) t.reachedAt.set(status.version, status.at)
  }

  event (member: MemberHandle, event: MemberEvent): void {
    const t = this.track(member.name, member.role)
    t.events.push(event)
    switch (event.kind) {
      case 'manifest':
        if (!t.manifestAt.has(event.version)) t.manifestAt.set(event.version, event.at)
        break
      case 'completed':
      case 'advanced':
        if (!t.reachedAt.has(event.to)) t.reachedAt.set(event.to, event.at)
        break
      case 'rolled-back':
        this.note(`${member.name}: upgrade to ${event.version} rolled back: ${event.error}`)
        break
      case 'schedule-error':
        this.note(`${member.name}: schedule error: ${event.error}`)
        break
      case 'halted':
        this.note(`${member.name}: rollout HALTED at version ${event.version} (fork proof)`)
        break
      default:
    }
  }

  ops (_member: MemberHandle, ops: OpSample[]): void {
    for (const op of ops) {
      this.opLog.push(op)
      this.totals[op.outcome]++
    }
  }

  exited (member: MemberHandle, how: { code: number | null, signal: string | null, expected: boolean }): void {
    const t = this.track(member.name, member.role)
    t.alive = false
    t.lifecycle.push({ at: Date.now(), what: 'exited', detail: how.signal ?? String(how.code) })
    if (!how.expected) this.note(`${member.name} exited unexpectedly (${how.signal ?? how.code})`)
  }

  /** Takes a sample of the fleet now. */
  sample (): FleetSample {
    const s: FleetSample = { at: Date.now(), nodes: {}, clients: {}, upgrading: 0, halted: 0 }
    for (const t of this.members.values()) {
      if (t.status == null) continue
      const bucket = t.role === 'node' ? s.nodes : s.clients
      bucket[t.status.version] = (bucket[t.status.version] ?? 0) + 1
      const phase = t.status.upgrading?.phase
      if (t.role === 'node' && phase != null && UPGRADING_PHASES.has(phase)) s.upgrading++
      if (isHalted(t.status)) s.halted++
    }
    this.samples.push(s)
    const busy = machineBusyMs()
    if (busy != null) this.machineCpu.push([s.at, busy])
    return s
  }
}

/**
 * CPU time the whole machine has spent busy since boot, ms, from `/proc/stat` (Linux; undefined
 * elsewhere): user, nice, system, irq, softirq and steal, in clock ticks of 10 ms.
 */
export function machineBusyMs (): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? ''
    const f = line.trim().split(/\s+/).slice(1).map(Number)
    if (line.startsWith('cpu ') === false || f.length < 8 || f.some(x => !Number.isFinite(x))) return undefined
    const [user, nice, system, , , irq, softirq, steal] = f as [number, number, number, number, number, number, number, number]
    return (user + nice + system + irq + softirq + steal) * 10
  } catch {
    return undefined
  }
}

/** The p-th percentile (0..100) of sorted numbers, nearest rank; NaN when empty. */
export function percentile (sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))
  return sorted[rank] as number
}

/** Latencies (ms) of the successful ops (of one kind, if given) that started in [from, to), sorted. */
export function latencies (ops: readonly OpSample[], from: number, to: number, kind?: OpSample['kind']): number[] {
  return ops.filter(o => o.outcome === 'ok' && o.start >= from && o.start < to && (kind == null || o.kind === kind)).map(o => o.end - o.start).sort((a, b) => a - b)
}

/**
 * CPU cores a set of processes kept busy in [from, to), from their cumulative CPU samples: each
 * interval between two samples counts where it falls, prorated at the window's edges. A counter
 * that went back is a new process (a kill and restart): its first sample counts from zero and is
 * left out, since when that process started is not known. NaN when no interval overlaps.
 */
export function cpuCores (series: ReadonlyArray<ReadonlyArray<readonly [number, number]>>, from: number, to: number): number {
  let busy = 0
  let covered = false
  for (const samples of series) {
    for (let i = 1; i < samples.length; i++) {
      const [t0, c0] = samples[i - 1] as readonly [number, number]
      const [t1, c1] = samples[i] as readonly [number, number]
      if (c1 < c0 || t1 <= t0) continue
      const overlap = Math.min(t1, to) - Math.max(t0, from)
      if (overlap <= 0) continue
      busy += (c1 - c0) * overlap / (t1 - t0)
      covered = true
    }
  }
  return covered && to > from ? busy / (to - from) : Number.NaN
}

/** One bucket of the client time series. */
export interface OpBucket {
  /** bucket start, ms since the epoch */
  at: number
  ok: number
  failed: number
  refused: number
  untyped: number
  p50: number
  p99: number
}

/** Buckets ops by start time, `width` ms each, from `from` to `to`. */
export function bucketOps (ops: readonly OpSample[], from: number, to: number, width: number): OpBucket[] {
  const n = Math.max(1, Math.ceil((to - from) / width))
  const buckets = Array.from({ length: n }, (_, i) => ({ at: from + i * width, ok: 0, failed: 0, refused: 0, untyped: 0, lat: [] as number[] }))
  for (const o of ops) {
    const i = Math.floor((o.start - from) / width)
    const b = buckets[i]
    if (b == null) continue
    b[o.outcome]++
    if (o.outcome === 'ok') b.lat.push(o.end - o.start)
  }
  return buckets.map(b => {
    const sorted = b.lat.sort((x, y) => x - y)
    return { at: b.at, ok: b.ok, failed: b.failed, refused: b.refused, untyped: b.untyped, p50: percentile(sorted, 50), p99: percentile(sorted, 99) }
  })
}
