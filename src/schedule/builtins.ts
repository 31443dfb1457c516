/**
 * The built-in scheduling functions (HotOS'03 §4, decision 10). Each is a pure function of its
 * {@link ScheduleInput}: it reads the node, the fleet view, the manifest's parameters, the time and
 * the seeded random source, and answers wait or upgrade. None keeps state between calls: what must
 * survive (an intent, an acknowledgement, a halt) goes into this node's status record, which the
 * owner publishes and hands back in `self`.
 *
 * Common to every built-in: a paused or aborted rollout waits.
 *
 * @packageDocumentation
 */
import { InvalidScheduleParamsError } from './errors.ts'
import { hashString, mix32 } from './random.ts'
import type { ControlState, Deferral, FleetView, PeerStatus, ScheduleDecision, ScheduleFunction, ScheduleInput, ScheduleParams, SelfView } from './types.ts'

// --- parameters ------------------------------------------------------------------------------

/**
 * A numeric parameter, or its default; throws `InvalidScheduleParamsError` when out of range.
 */
export function numberParam (params: ScheduleParams, key: string, fallback: number, min: number, max: number): number {
  const value = params[key]
  if (value === undefined || value === null) {
    return fallback
  }
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
  if (typeof n !== 'number' || !Number.isFinite(n) || n < min || n > max) {
    throw new InvalidScheduleParamsError(`${key}: expected a number in [${min}, ${max}], got ${JSON.stringify(value)}`)
  }
  return n
}

/**
 * A string parameter, or its default; throws `InvalidScheduleParamsError` when it is not a string.
 */
export function stringParam (params: ScheduleParams, key: string, fallback?: string): string | undefined {
  const value = params[key]
  if (value === undefined || value === null) {
    return fallback
  }
  if (typeof value !== 'string') {
    throw new InvalidScheduleParamsError(`${key}: expected a string, got ${JSON.stringify(value)}`)
  }
  return value
}

/** A comma- or space-separated list parameter (e.g. peer ids), empty when absent. */
export function listParam (params: ScheduleParams, key: string): string[] {
  return (stringParam(params, key) ?? '').split(/[\s,]+/).filter(s => s.length > 0)
}

// --- what a record says ------------------------------------------------------------------------

/** The peer runs `target` or later and is serving (not down, not failed). */
export function isDone (record: PeerStatus, target: number): boolean {
  return record.version >= target && (record.phase === 'running' || record.phase === 'waiting' || record.phase === 'intent' || record.phase === 'halted') && record.healthy
}

/** The peer is down for an upgrade. */
export function isDown (record: PeerStatus): boolean {
  return record.phase === 'upgrading'
}

/**
 * The peer reports a failure (or passes on a halt) concerning `target`, made after the last
 * resume.
 */
export function isFailing (record: PeerStatus, target: number, control: ControlState): boolean {
  if (record.at < control.resumedAt) {
    return false
  }
  const concerns = record.target >= target || record.version >= target
  return concerns && (record.phase === 'failed' || record.phase === 'halted' || (!record.healthy && record.version >= target))
}

/** Priority among competing intents: the lowest peer id goes first (HotOS'03: the lowest address). */
function before (a: string, b: string): boolean {
  return a < b
}

const wait = (reason: string, extra: Partial<ScheduleDecision> = {}): ScheduleDecision => ({ decision: 'wait', reason, ...extra })
const go = (reason: string): ScheduleDecision => ({ decision: 'upgrade', reason })

function held (view: FleetView): ScheduleDecision | undefined {
  if (view.control.aborted) {
    return wait('the rollout was aborted')
  }
  if (view.control.paused) {
    return wait('the rollout is paused')
  }
  return undefined
}

/** Every counted peer this node knows of: replicas, servers and contacts, each once. */
export function countedPeers (self: SelfView, view: FleetView): PeerStatus[] {
  const out = new Map<string, PeerStatus>()
  for (const p of [...self.replicas, ...self.servers]) {
    const r = view.get(p)
    if (r != null) out.set(p, r)
  }
  for (const r of view.contacts()) {
    out.set(r.peer, r)
  }
  out.delete(self.peer)
  return [...out.values()]
}

// --- the schedules -----------------------------------------------------------------------------

/**
 * `eager`: upgrade at once. For a critical fix.
 */
export const eager: ScheduleFunction = ({ view }) => held(view) ?? go('eager')

/**
 * `gradual`: at the end of every period the node flips a coin that comes up "upgrade" with
 * probability `rate`. After m periods a fraction 1 − (1 − rate)^m of the nodes has gone.
 *
 * Parameters: `rate` (probability per period, default 0.1), `periodMs` (default 10 000).
 */
export const gradual: ScheduleFunction = ({ self, view, params, now, random }) => {
  const h = held(view)
  if (h != null) return h
  const rate = numberParam(params, 'rate', 0.1, 0, 1)
  const period = numberParam(params, 'periodMs', 10_000, 1, Number.MAX_SAFE_INTEGER)
  const elapsed = Math.floor((now - self.since) / period)
  // the first period whose flip comes up heads: one coin per period, fixed by the seed
  for (let k = 1; k <= Math.max(elapsed, 0) && k <= 1_000_000; k++) {
    if (random(`gradual:${k}`) < rate) {
      return go(`coin came up in period ${k}`)
    }
  }
  return wait('coin came up tails', { retryAt: self.since + (Math.max(elapsed, 0) + 1) * period })
}

/**
 * `one-replica-at-a-time`: never two members of a replica group down at once, even under gossip
 * delay and loss. A node announces its intent, waits at least `settleMs`, and goes only when every
 * live replica that has not finished has acknowledged that very intent (a deferral naming it in a
 * record made after the intent). Competing intents: the lowest peer id goes, the others withdraw
 * and acknowledge it. A replica that is down, or whose intent ranks first, is acknowledged and
 * waited for.
 *
 * A listed replica with no live record (never heard of, or silent past the expiry) may be down:
 * the node waits. A replica that is gone for good leaves the group when the app drops it from
 * its replica list; safety never depends on a timeout.
 *
 * Parameters: `settleMs` (default 1 000).
 */
export const oneReplicaAtATime: ScheduleFunction = ({ self, view, params, now }) => {
  const h = held(view)
  if (h != null) return h
  const settle = numberParam(params, 'settleMs', 1000, 0, Number.MAX_SAFE_INTEGER)
  const live: PeerStatus[] = []
  for (const peer of self.replicas) {
    if (peer === self.peer) continue
    const r = view.get(peer)
    if (r == null) {
      return wait(`replica ${peer} is silent or unknown: it may be down`, { intent: false })
    }
    live.push(r)
  }
  const down = live.find(isDown)
  if (down != null) {
    return wait(`replica ${down.peer} is upgrading`, { intent: false, defer: { peer: down.peer, seq: down.seq } })
  }
  const rivals = live.filter(r => r.phase === 'intent' && r.version < self.target)
  const first = rivals.reduce<PeerStatus | undefined>((best, r) => best == null || before(r.peer, best.peer) ? r : best, undefined)
  const mine = self.phase === 'intent' && self.intentSeq != null
  if (first != null && (!mine || before(first.peer, self.peer))) {
    return wait(`replica ${first.peer} goes first`, { intent: false, defer: { peer: first.peer, seq: first.seq } })
  }
  if (!mine) {
    return wait('announcing intent', { intent: true, retryAt: now + settle })
  }
  if (now < (self.intentAt ?? now) + settle) {
    return wait('intent announced, settling', { intent: true, retryAt: (self.intentAt ?? now) + settle })
  }
  const missing = live.filter(r => !(isDone(r, self.target) && r.phase === 'running') &&
    !(r.defer?.peer === self.peer && r.defer.seq >= (self.intentSeq as number)))
  if (missing.length > 0) {
    return wait(`waiting for ${missing.length} replica(s) to acknowledge the intent`, { intent: true })
  }
  return go('every replica acknowledged the intent')
}

/**
 * `after-my-servers`: upgrade once every server of this node runs the target version: the
 * servers the app names and the peers this node has called (seen in call replies).
 * A server with no record yet holds the node.
 */
export const afterMyServers: ScheduleFunction = ({ self, view }) => {
  const h = held(view)
  if (h != null) return h
  const servers = new Set(self.servers)
  for (const c of view.contacts()) {
    if (c.called) servers.add(c.peer)
  }
  servers.delete(self.peer)
  for (const s of servers) {
    const r = view.get(s)
    if (r == null) return wait(`no status of server ${s} yet`)
    if (!isDone(r, self.target) || r.phase === 'upgrading') return wait(`server ${s} is at version ${r.version}`)
  }
  return go(servers.size === 0 ? 'no servers' : `all ${servers.size} server(s) upgraded`)
}

/**
 * `class-order`: nodes of class `first` upgrade (by the `then` schedule, default eager) before any
 * node of another class. A node of another class waits until every counted node of class `first`
 * runs the target: the `roster` (peer ids), its servers, and its contacts of that class. It needs at
 * least `minFirst` of them (default 1) so that knowing none never passes for "all done".
 *
 * Parameters: `first` (required), `roster`, `minFirst`, `then`.
 */
export const classOrder: ScheduleFunction = (input) => {
  const { self, view, params } = input
  const h = held(view)
  if (h != null) return h
  const first = stringParam(params, 'first')
  if (first == null) throw new InvalidScheduleParamsError('first: the class that goes first is required')
  if (self.class === first) {
    return thenSchedule(input)
  }
  const minFirst = numberParam(params, 'minFirst', 1, 0, Number.MAX_SAFE_INTEGER)
  const firsts = new Map<string, PeerStatus | undefined>()
  for (const p of [...listParam(params, 'roster'), ...self.servers]) firsts.set(p, view.get(p))
  for (const c of view.contacts()) {
    if (c.class === first) firsts.set(c.peer, c)
  }
  firsts.delete(self.peer)
  for (const [peer, r] of firsts) {
    if (r == null) return wait(`no status of ${first} node ${peer} yet`)
    if (!isDone(r, self.target) || r.phase === 'upgrading') return wait(`${first} node ${peer} has not upgraded`)
  }
  if (firsts.size < minFirst) return wait(`knows ${firsts.size} of the ${minFirst} ${first} node(s) it needs`)
  return thenSchedule(input)
}

/**
 * `canary` (only these nodes): the nodes listed in `peers` upgrade; every other node waits until
 * the upgrader releases the rollout, then follows `then` (default eager).
 *
 * Parameters: `peers` (required, comma-separated peer ids), `then`.
 */
export const canary: ScheduleFunction = (input) => {
  const { self, view, params } = input
  const h = held(view)
  if (h != null) return h
  const peers = listParam(params, 'peers')
  if (peers.length === 0) throw new InvalidScheduleParamsError('peers: the canary list is required')
  if (peers.includes(self.peer)) return go('on the canary list')
  if (!view.control.released) return wait('not on the canary list; waiting for the release')
  return thenSchedule(input)
}

/** A wave list: "1,10%,50%,100%" → cumulative fractions, counts divided by `fleetSize`. */
export function parseWaves (params: ScheduleParams): number[] {
  const spec = stringParam(params, 'waves', '1%,10%,50%,100%') as string
  const parts = spec.split(/[\s,]+/).filter(s => s.length > 0)
  if (parts.length === 0 || parts.length > 32) throw new InvalidScheduleParamsError('waves: 1 to 32 entries')
  const fleet = params.fleetSize == null ? undefined : numberParam(params, 'fleetSize', 1, 1, Number.MAX_SAFE_INTEGER)
  const out: number[] = []
  for (const p of parts) {
    let f: number
    if (p.endsWith('%')) {
      f = Number(p.slice(0, -1)) / 100
    } else {
      if (fleet == null) throw new InvalidScheduleParamsError(`waves: "${p}" is a node count, which needs fleetSize`)
      f = Number(p) / fleet
    }
    if (!Number.isFinite(f) || f <= 0 || f > 1 || (out.length > 0 && f < (out.at(-1) as number))) {
      throw new InvalidScheduleParamsError(`waves: "${p}" is not a growing fraction in (0, 100%]`)
    }
    out.push(f)
  }
  out[out.length - 1] = 1
  return out
}

/**
 * A peer's rank in [0, 1) for the waves: public (any node can compute it for any peer) and fixed
 * by the rollout's `salt`.
 */
export function waveRank (peer: string, salt: string): number {
  return mix32(hashString(`${salt}/${peer}`)) / 4294967296
}

/** The wave (0-based) a peer falls in. */
export function waveOf (peer: string, waves: readonly number[], salt: string): number {
  const r = waveRank(peer, salt)
  const w = waves.findIndex(f => r < f)
  return w < 0 ? waves.length - 1 : w
}

/**
 * `waves`: the fleet goes in waves (e.g. 1 % → 10 % → 50 % → all; a wave may be a node count with
 * `fleetSize`). Wave w may start `soakMs` after wave w − 1 was allowed to, and only when every
 * counted peer of an earlier wave has upgraded and is healthy. A counted peer that reports a
 * failure (or passes a halt on) halts this node, which passes the halt on in its own record: the
 * halt spreads through counted peers to every node still waiting, until an upgrader resumes
 * (failures before the resume are forgiven) or aborts.
 *
 * Parameters: `waves` (default "1%,10%,50%,100%"), `fleetSize`, `soakMs` (default 60 000),
 * `start` (ms; default when this node learnt of the upgrade), `salt` (default "").
 */
export const waves: ScheduleFunction = ({ self, view, params, now }) => {
  const h = held(view)
  if (h != null) return h
  const list = parseWaves(params)
  const soak = numberParam(params, 'soakMs', 60_000, 0, Number.MAX_SAFE_INTEGER)
  const start = numberParam(params, 'start', self.since, 0, Number.MAX_SAFE_INTEGER)
  const salt = stringParam(params, 'salt', '') as string
  const mine = waveOf(self.peer, list, salt)
  const counted = countedPeers(self, view)
  const failing = counted.find(r => isFailing(r, self.target, view.control))
  if (failing != null) {
    const reason = failing.phase === 'halted' ? `halt passed on by ${failing.peer}` : `${failing.peer} failed`
    return wait(`halted: ${reason}`, { halt: { peer: failing.peer, reason } })
  }
  const opens = start + mine * soak
  if (now < opens) {
    return wait(`wave ${mine} opens later`, { retryAt: opens })
  }
  for (const r of counted) {
    const forgiven = (r.phase === 'failed' || !r.healthy) && r.at < view.control.resumedAt
    if (!forgiven && waveOf(r.peer, list, salt) < mine && !(isDone(r, self.target) && r.phase !== 'upgrading')) {
      return wait(`${r.peer} of wave ${waveOf(r.peer, list, salt)} has not upgraded`)
    }
  }
  return go(`wave ${mine} is open`)
}

/** The schedule named by `params.then` (default eager), for the schedules that hand over. */
function thenSchedule (input: ScheduleInput): ScheduleDecision {
  const name = stringParam(input.params, 'then', 'eager') as string
  const next = BUILTIN_SCHEDULES[name]
  if (next == null || name === 'canary' || name === 'class-order') {
    throw new InvalidScheduleParamsError(`then: "${name}" is not a built-in schedule that can follow`)
  }
  return next(input)
}

/**
 * The built-in schedules by the name a manifest gives them.
 */
export const BUILTIN_SCHEDULES: Readonly<Record<string, ScheduleFunction>> = Object.freeze({
  eager,
  gradual,
  'one-replica-at-a-time': oneReplicaAtATime,
  'after-my-servers': afterMyServers,
  'class-order': classOrder,
  canary,
  waves
})

/** Re-exported for owners that acknowledge intents. */
export type { Deferral }
