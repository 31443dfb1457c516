/**
 * A run's figures and the acceptance checks, from what the recorder saw and the lost-write
 * check: `summary.json` is this object, the bench line is its `bench`, the report shows it.
 *
 * @packageDocumentation
 */
import { availableParallelism } from 'node:os'
import { memoryMb } from './member.ts'
import { chordVersion, versionLabel } from './chord.ts'
import { bucketOps, cpuCores, latencies, opTotal, percentile, type FleetSample, type OpBucket, type Recorder } from './recorder.ts'
import type { TestnetOptions } from './args.ts'
import type { TestnetSetup } from './setup.ts'
import type { LostWrite, WriteCheck } from './verify.ts'
import type { OpSample, WorkloadRecord } from './ipc.ts'

/** The bench line: `npm run testnet -- --json` prints it last on stdout. */
export interface BenchLine {
  bench: 'testnet'
  nodes: number
  /** publish → every member reported the manifest (null under --control) */
  propagation_ms: number | null
  /** publish → every chord node runs the target (--control: first restart → last restart done) */
  all_upgraded_ms: number | null
  ops: number
  ok_ratio: number
  lost_writes: number
  p50_steady_ms: number | null
  p50_rollout_ms: number | null
  p99_steady_ms: number | null
  p99_rollout_ms: number | null
  /**
   * From the end of the rollout to the workload's stop: every member at the target, so the new
   * version's own latency at the same load (a v2 put also writes its replicas), which the
   * rollout window mixes with the old version's
   */
  p50_after_ms: number | null
  p99_after_ms: number | null
  /** median over node processes of each one's peak RSS (app worker included), MB */
  rss_mb_p50: number | null
  /** `rollout`, or `control` for the baseline */
  mode: 'rollout' | 'control'
}

/** Latency figures of some ops. */
export interface Latency {
  /** successful ops */
  ops: number
  p50: number | null
  p99: number | null
}

/** Latency figures of a window, in all and per kind of op. */
export interface Window extends Latency {
  from: number
  to: number
  /** the same per kind: a v2 put also writes its replicas, a get does not */
  byKind: Partial<Record<OpSample['kind'], Latency>>
}

/** CPU cores busy in each window. */
export interface CpuWindows {
  steady: number | null
  rollout: number | null
  after: number | null
}

/** One member in the summary. */
export interface MemberSummary {
  name: string
  role: 'node' | 'client'
  peerId: string | null
  dataDir: string | null
  /** system version and Chord version at the end */
  version: number | null
  chord: string | null
  alive: boolean
  /** ms after the publish at which it reported the manifest / reached the target */
  manifestMs: number | null
  upgradedMs: number | null
  peakRssMb: number
  /** RSS over time: [ms after the run's start, MB] */
  rss: Array<[number, number]>
  killed: number
  /** manager phases and lifecycle marks, ms after the run's start */
  timeline: Array<{ at: number, what: string }>
}

/** Everything a run measured and checked. */
export interface Summary {
  bench: BenchLine
  run: {
    mode: 'rollout' | 'control'
    inProcess: boolean
    nodes: number
    clients: number
    schedule: string | null
    params: Record<string, string | number | boolean | null>
    from: string
    to: string
    targetSystemVersion: number
    faults: { kill: number, partition: boolean }
    seed: number
    startedAt: string
    durationMs: number
    dataDir: string
  }
  checks: {
    passed: boolean
    failures: string[]
    lostWrites: number
    unreadableKeys: number
    checkedKeys: number
    ackedPuts: number
    ackedDeletes: number
    newerUnacked: number
    nodesAtTarget: number
    clientsAtTarget: number
    untypedFailures: number
    okRatio: number
    minOkRatio: number
  }
  ops: {
    total: number
    ok: number
    failed: number
    refused: number
    untyped: number
    byKind: Record<string, { ok: number, failed: number, refused: number, untyped: number }>
    failuresByName: Record<string, number>
    retried: number
    steady: Window
    rollout: Window
    after: Window
  }
  rollout: {
    publishes: Array<{ version: number, atMs: number, through: string, cid: string }>
    propagationMs: number | null
    nodesUpgradedMs: number | null
    membersUpgradedMs: number | null
    rolledBack: number
    postponed: number
    scheduleErrors: number
    halts: number
    kills: Array<{ name: string, atMs: number, restartedMs: number | null }>
    restarts: Array<{ name: string, atMs: number, readyMs: number | null }>
    partition: {
      atMs: number
      healMs: number | null
      sides: { a: string[], b: string[] } | null
      /** acknowledged writes to the shared keys made on each side while cut */
      sharedWrites: { a: number, b: number }
      /** shared keys written on both sides while cut: concurrent writes the merge resolves */
      keysWrittenOnBothSides: number
    } | null
  }
  memory: { rssMbP50: number | null, rssMbMax: number | null, clientRssMbMax: number | null, launcherPeakRssMb: number }
  /**
   * CPU cores the chord node processes (their app workers included) and the client processes
   * kept busy in all, per window; null in-process, where every member shares the launcher's
   * process. `machine`: the whole machine's busy cores (the launcher, everything else running;
   * null off Linux). What the upgrade costs the machine, beside what the new version costs once it runs,
   * and how close to `machineCores` the run was.
   */
  cpu: { nodes: CpuWindows, clients: CpuWindows, machine: CpuWindows, machineCores: number }
  members: MemberSummary[]
  /** for the plots: fleet samples and op buckets, times in ms after the run's start */
  series: {
    start: number
    publishMs: number | null
    samples: Array<Omit<FleetSample, 'at'> & { t: number }>
    buckets: Array<Omit<OpBucket, 'at'> & { t: number }>
  }
  /** the first lost writes, for diagnosis */
  lost: LostWrite[]
  notes: string[]
}

const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits
const orNull = (n: number): number | null => Number.isFinite(n) ? round(n, 2) : null

function latency (sorted: number[]): Latency {
  return { ops: sorted.length, p50: orNull(percentile(sorted, 50)), p99: orNull(percentile(sorted, 99)) }
}

function window (rec: Recorder, from: number | undefined, to: number | undefined): Window {
  if (from == null || to == null || to <= from) return { from: from ?? 0, to: to ?? 0, ops: 0, p50: null, p99: null, byKind: {} }
  const byKind: Window['byKind'] = {}
  for (const kind of ['put', 'get', 'delete'] as const) {
    const l = latencies(rec.opLog, from, to, kind)
    if (l.length > 0) byKind[kind] = latency(l)
  }
  return { from, to, ...latency(latencies(rec.opLog, from, to)), byKind }
}

/** Acknowledged writes to shared keys made on each side of the partition while it held. */
function partitionWrites (records: WorkloadRecord[], from: number, to: number, sides: { a: string[], b: string[] } | undefined): { sharedWrites: { a: number, b: number }, keysWrittenOnBothSides: number } {
  const counts = { a: 0, b: 0 }
  const keys = { a: new Set<string>(), b: new Set<string>() }
  for (const r of records) {
    const side = sides?.a.includes(r.client) === true ? 'a' : sides?.b.includes(r.client) === true ? 'b' : undefined
    if (side == null) continue
    for (const w of r.writes) {
      if (w.status !== 'acked' || !w.key.startsWith('shared/') || w.start < from || w.end > to) continue
      counts[side]++
      keys[side].add(w.key)
    }
  }
  return { sharedWrites: counts, keysWrittenOnBothSides: [...keys.a].filter(k => keys.b.has(k)).length }
}

/** Builds the summary and runs the acceptance checks. */
export function summarise (input: { options: TestnetOptions, rec: Recorder, check: WriteCheck, setup: TestnetSetup, records: WorkloadRecord[], target: number }): Summary {
  const { options: o, rec, check, target } = input
  const m = rec.marks
  const start = m.start
  const publish = m.publish
  const tracks = [...rec.members.values()]
  const nodes = tracks.filter(t => t.role === 'node')
  const clients = tracks.filter(t => t.role === 'client')
  const mode = o.control ? 'control' : 'rollout'

  const reached = (t: typeof tracks[number]): number | undefined => t.reachedAt.get(target) ?? (t.status != null && t.status.version >= target ? t.status.at : undefined)
  const maxOf = (xs: Array<number | undefined>): number | undefined => xs.some(x => x == null) || xs.length === 0 ? undefined : Math.max(...(xs as number[]))
  const firstVersion = m.publishes[0]?.version
  const propagatedAt = o.control || firstVersion == null ? undefined : maxOf(tracks.map(t => t.manifestAt.get(firstVersion)))
  const nodesAt = o.control ? m.allUpgraded : maxOf(nodes.map(reached))
  const membersAt = o.control ? m.allUpgraded : maxOf(tracks.map(reached))
  const since = (t: number | undefined): number | null => t != null && publish != null ? Math.max(0, t - publish) : null

  const rolloutEnd = membersAt ?? m.allUpgraded
  const steady = window(rec, m.steadyStart, publish)
  const rollout = window(rec, publish, rolloutEnd)
  const after = window(rec, rolloutEnd, m.workloadStop)

  const { ok, failed, refused, untyped } = rec.totals
  const total = opTotal(rec.totals)
  const okRatio = total > 0 ? ok / total : 0
  // one pass over the op log for everything counted per op (the recorder only keeps the totals)
  const byKind: Summary['ops']['byKind'] = {}
  const failuresByName = new Map<string, number>()
  const untypedByName = new Map<string, number>()
  let retried = 0
  for (const op of rec.opLog) {
    const k = byKind[op.kind] ??= { ok: 0, failed: 0, refused: 0, untyped: 0 }
    k[op.outcome]++
    if (op.error != null) failuresByName.set(op.error, (failuresByName.get(op.error) ?? 0) + 1)
    if (op.outcome === 'untyped') untypedByName.set(op.error ?? 'Error', (untypedByName.get(op.error ?? 'Error') ?? 0) + 1)
    if (op.attempts > 1) retried++
  }
  const nodePeaks = nodes.map(t => t.peakRssMb).filter(x => x > 0).sort((a, b) => a - b)
  const clientPeaks = clients.map(t => t.peakRssMb).filter(x => x > 0)
  const launcher = memoryMb().peakRssMb
  const cores = (series: Array<Array<[number, number]>>): CpuWindows => {
    const busy = (from: number | undefined, to: number | undefined): number | null => from == null || to == null ? null : orNull(cpuCores(series, from, to))
    return { steady: busy(m.steadyStart, publish), rollout: busy(publish, rolloutEnd), after: busy(rolloutEnd, m.workloadStop) }
  }
  // a failed read-back is counted as unreadable, not as lost
  const lost = check.lost.filter(l => !('error' in l.got))
  const lostWrites = lost.length
  const nodesAtTarget = nodes.filter(t => t.alive && (t.status?.version ?? -1) >= target).length
  const clientsAtTarget = clients.filter(t => t.alive && (t.status?.version ?? -1) >= target).length
  const count = (kind: string): number => tracks.reduce((n, t) => n + t.events.filter(e => e.kind === kind).length, 0)

  const failures: string[] = []
  if (lostWrites > 0) failures.push(`${lostWrites} lost write(s): ${lost.slice(0, 3).map(l => `${l.key} (${l.reason})`).join('; ')}`)
  if (check.unreadable > 0) failures.push(`${check.unreadable} written key(s) could not be read back`)
  if (nodesAtTarget < nodes.length) failures.push(`${nodes.length - nodesAtTarget} of ${nodes.length} nodes are not at ${versionLabel(target)}`)
  if (clientsAtTarget < clients.length) failures.push(`${clients.length - clientsAtTarget} of ${clients.length} clients are not at ${versionLabel(target)}`)
  if (untyped > 0) failures.push(`${untyped} op(s) failed with an untyped error (${[...untypedByName].map(([n, c]) => `${n} ×${c}`).join(', ')})`)
  if (okRatio < 0.999) failures.push(`ok ratio ${(okRatio * 100).toFixed(3)} % is below 99.9 %`)
  if (check.checked === 0) failures.push('no acknowledged write to check')

  const bench: BenchLine = {
    bench: 'testnet',
    nodes: o.nodes,
    propagation_ms: o.control ? null : since(propagatedAt),
    all_upgraded_ms: o.control ? (m.allUpgraded != null && publish != null ? m.allUpgraded - publish : null) : since(nodesAt),
    ops: total,
    ok_ratio: round(okRatio, 5),
    lost_writes: lostWrites,
    p50_steady_ms: steady.p50,
    p50_rollout_ms: rollout.p50,
    p99_steady_ms: steady.p99,
    p99_rollout_ms: rollout.p99,
    p50_after_ms: after.p50,
    p99_after_ms: after.p99,
    rss_mb_p50: o.inProcess ? round(launcher / Math.max(1, tracks.length), 1) : nodePeaks.length > 0 ? round(percentile(nodePeaks, 50), 1) : null,
    mode
  }

  const members: MemberSummary[] = tracks.map(t => {
    const timeline: MemberSummary['timeline'] = []
    for (const e of t.events) {
      if (e.kind === 'phase') timeline.push({ at: e.at - start, what: `${e.phase}@${e.version}` })
      else if (e.kind === 'completed') timeline.push({ at: e.at - start, what: `completed@${e.to}` })
      else if (e.kind === 'advanced') timeline.push({ at: e.at - start, what: `advanced@${e.to}` })
      else if (e.kind === 'rolled-back') timeline.push({ at: e.at - start, what: `rolled-back@${e.version}` })
      else if (e.kind === 'manifest') timeline.push({ at: e.at - start, what: `manifest@${e.version}` })
    }
    for (const l of t.lifecycle) timeline.push({ at: l.at - start, what: l.what })
    timeline.sort((a, b) => a.at - b.at)
    return {
      name: t.name,
      role: t.role,
      peerId: t.peerId ?? null,
      dataDir: o.inProcess ? null : `${o.dataDir}/${t.name}`,
      version: t.status?.version ?? null,
      chord: t.status != null ? versionLabel(t.status.version) : null,
      alive: t.alive,
      manifestMs: firstVersion != null ? since(t.manifestAt.get(firstVersion)) : null,
      upgradedMs: o.control ? null : since(reached(t)),
      peakRssMb: round(t.peakRssMb, 1),
      rss: t.rss.map(([at, mb]) => [at - start, mb]),
      killed: m.kills.filter(k => k.name === t.name).length,
      timeline
    }
  })

  const bucketFrom = m.steadyStart ?? start
  const buckets = bucketOps(rec.opLog, bucketFrom, m.workloadStop ?? Date.now(), 1000)
  return {
    bench,
    run: {
      mode,
      inProcess: o.inProcess,
      nodes: o.nodes,
      clients: o.clients,
      schedule: o.control ? null : o.schedule,
      params: o.params,
      from: 'v1',
      to: o.control ? 'v1' : `v${chordVersion(target)}`,
      targetSystemVersion: target,
      faults: o.faults,
      seed: o.seed,
      startedAt: new Date(start).toISOString(),
      durationMs: (m.end ?? Date.now()) - start,
      dataDir: o.dataDir
    },
    checks: {
      passed: failures.length === 0,
      failures,
      lostWrites,
      unreadableKeys: check.unreadable,
      checkedKeys: check.checked,
      ackedPuts: check.ackedPuts,
      ackedDeletes: check.ackedDeletes,
      newerUnacked: check.newerUnacked,
      nodesAtTarget,
      clientsAtTarget,
      untypedFailures: untyped,
      okRatio: round(okRatio, 5),
      minOkRatio: 0.999
    },
    ops: {
      total,
      ok,
      failed,
      refused,
      untyped,
      byKind,
      failuresByName: Object.fromEntries(failuresByName),
      retried,
      steady,
      rollout,
      after
    },
    rollout: {
      publishes: m.publishes.map(p => ({ version: p.version, atMs: p.at - start, through: p.through, cid: p.cid })),
      propagationMs: bench.propagation_ms,
      nodesUpgradedMs: bench.all_upgraded_ms,
      membersUpgradedMs: o.control ? bench.all_upgraded_ms : since(membersAt),
      rolledBack: count('rolled-back'),
      postponed: count('postponed'),
      scheduleErrors: count('schedule-error'),
      halts: count('halted') + Math.max(0, ...rec.samples.map(s => s.halted)),
      kills: m.kills.map(k => ({ name: k.name, atMs: k.at - start, restartedMs: k.restartedAt != null ? k.restartedAt - start : null })),
      restarts: m.restarts.map(r => ({ name: r.name, atMs: r.at - start, readyMs: r.readyAt != null ? r.readyAt - start : null })),
      partition: m.partition != null ? { atMs: m.partition - start, healMs: m.heal != null ? m.heal - start : null, sides: m.sides ?? null, ...partitionWrites(input.records, m.partition, m.heal ?? m.partition, m.sides) } : null
    },
    memory: {
      rssMbP50: bench.rss_mb_p50,
      rssMbMax: nodePeaks.length > 0 ? round(Math.max(...nodePeaks), 1) : null,
      clientRssMbMax: clientPeaks.length > 0 ? round(Math.max(...clientPeaks), 1) : null,
      launcherPeakRssMb: round(launcher, 1)
    },
    cpu: {
      nodes: cores(nodes.map(t => t.cpu)),
      clients: cores(clients.map(t => t.cpu)),
      machine: cores([rec.machineCpu]),
      machineCores: availableParallelism()
    },
    members,
    series: {
      start,
      publishMs: publish != null ? publish - start : null,
      samples: rec.samples.map(({ at, ...rest }) => ({ t: at - start, ...rest })),
      buckets: buckets.map(({ at, ...rest }) => ({ t: at - start, ...rest, p50: Number.isFinite(rest.p50) ? round(rest.p50, 2) : Number.NaN, p99: Number.isFinite(rest.p99) ? round(rest.p99, 2) : Number.NaN }))
    },
    lost: check.lost.slice(0, 50),
    notes: rec.notes.map(n => `t+${((n.at - start) / 1000).toFixed(1)} s: ${n.text}`)
  }
}
