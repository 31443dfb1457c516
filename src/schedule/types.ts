/**
 * The interfaces every scheduling function (SF) is written against. The same SF code runs on a
 * real node behind the networked fleet view ({@link createFleetView}) and in the simulator behind
 * an in-memory one: both implement {@link FleetView}.
 *
 * An SF is a pure function of (this node's read-only view, the fleet view, the manifest's
 * parameters, time, a seeded random source) → wait / upgrade now (decision 10).
 *
 * @packageDocumentation
 */

/**
 * Where a node is in the rollout of one target version.
 *
 * - `running`: serving at `version`, no upgrade pending (`target === version`), or done.
 * - `waiting`: knows of `target > version`; its SF says wait.
 * - `intent`: announced that it means to upgrade next (one-replica-at-a-time); still serving.
 * - `upgrading`: down for the upgrade.
 * - `failed`: the upgrade failed here (or the new version reports itself unhealthy).
 * - `halted`: waiting, and holding because a counted peer failed (it passes the halt on).
 */
export type Phase = 'running' | 'waiting' | 'intent' | 'upgrading' | 'failed' | 'halted'

/** Every phase, in wire order. */
export const PHASES: readonly Phase[] = Object.freeze(['running', 'waiting', 'intent', 'upgrading', 'failed', 'halted'])

/**
 * A node's acknowledgement of another node's intent: "I will not upgrade before you are done".
 * Names the intent by its record's sequence number so an old acknowledgement never passes for a
 * new one.
 */
export interface Deferral {
  /** the peer whose intent is acknowledged */
  readonly peer: string
  /** the sequence number of that peer's record that announced the intent */
  readonly seq: number
}

/**
 * The signed status of one peer (decision 10). Last writer by `seq`, never by clock.
 */
export interface StatusRecord {
  /** the peer's id (its libp2p peer id string); the record is signed with its key */
  readonly peer: string
  /** the class the peer runs */
  readonly class: string
  /** the system version the peer runs */
  readonly version: number
  /** the version it is moving to; equals `version` when nothing is pending */
  readonly target: number
  /** where it is in the rollout of `target` */
  readonly phase: Phase
  /** whether its running version reports itself healthy */
  readonly healthy: boolean
  /** app tags, e.g. `{ group: 'replicas-7' }`: at most 8, short strings */
  readonly tags: Readonly<Record<string, string>>
  /** per-peer monotonic sequence number, ≥ 1 */
  readonly seq: number
  /** milliseconds since the epoch at which the peer made the record; informational only */
  readonly at: number
  /** the intent this peer currently yields to (one-replica-at-a-time), if any */
  readonly defer?: Deferral
}

/**
 * One entry of a fleet view: a peer's latest record as this node knows it.
 */
export interface PeerStatus extends StatusRecord {
  /** how it was learnt: a signed record, or the version label on a call reply (decision 6) */
  readonly source: 'record' | 'label'
  /** local time (ms) at which this node last heard of the peer */
  readonly heardAt: number
  /** this node has called the peer: a server seen in calls */
  readonly called: boolean
}

/**
 * Operator control as the SFs see it (from control messages signed by release keys).
 */
export interface ControlState {
  /** the rollout is paused: every SF answers wait */
  readonly paused: boolean
  /** the rollout is aborted: every SF answers wait, for good */
  readonly aborted: boolean
  /** the canary phase is over: nodes outside the canary list may go */
  readonly released: boolean
  /**
   * Failures announced before this time (ms) are forgiven: an upgrader resumed the rollout after
   * a halt. 0 when never resumed.
   */
  readonly resumedAt: number
}

/** The control state of a rollout nobody has touched. */
export const NO_CONTROL: ControlState = Object.freeze({ paused: false, aborted: false, released: false, resumedAt: 0 })

/**
 * What an SF sees of the fleet: only the peers this node counts (its replica group, its servers,
 * the upgrader's roster, peers it called), each as its latest record. Strangers are not visible.
 */
export interface FleetView {
  /**
   * The latest live status of a counted peer, or `undefined` when the peer is not counted, was
   * never heard of, or fell silent for longer than the expiry.
   */
  get(peer: string): PeerStatus | undefined

  /**
   * Every live counted peer this node has records of beyond its replicas and servers: the roster
   * and the peers it has called. A sample of the fleet, for fleet-wide fractions.
   */
  contacts(): readonly PeerStatus[]

  /** operator control of the rollout */
  readonly control: ControlState
}

/**
 * This node, read-only: what an SF may know of the node it runs on.
 */
export interface SelfView {
  /** this node's peer id */
  readonly peer: string
  /** its class */
  readonly class: string
  /** the version it runs */
  readonly version: number
  /** the version being scheduled (the manifest's) */
  readonly target: number
  /** its current phase */
  readonly phase: Phase
  /** the sequence number of its latest published record */
  readonly seq: number
  /** the sequence number of the record that announced its current intent (phase `intent`) */
  readonly intentSeq?: number
  /** when (ms) it entered phase `intent` */
  readonly intentAt?: number
  /** when (ms) this node learnt of `target` */
  readonly since: number
  /** its app tags (e.g. `group`) */
  readonly tags: Readonly<Record<string, string>>
  /** the other members of its replica group, as the app names them */
  readonly replicas: readonly string[]
  /** its servers, as the app names them */
  readonly servers: readonly string[]
  /** the app's privileged observers (HotOS'03 §4): read-only values */
  readonly observers: Readonly<Record<string, unknown>>
}

/** A manifest's schedule parameter: plain JSON-compatible values only. */
export type ScheduleParam = string | number | boolean | null

/** A manifest's schedule parameters. */
export type ScheduleParams = Readonly<Record<string, ScheduleParam>>

/**
 * A seeded random source. `random()` draws the next number in [0, 1); `random(key)` is a fixed
 * number in [0, 1) for that key (same seed, node and key → same number), so an SF can flip one
 * coin per period however often it is asked.
 */
export type RandomSource = (key?: string | number) => number

/**
 * Everything an SF gets.
 */
export interface ScheduleInput {
  readonly self: SelfView
  readonly view: FleetView
  readonly params: ScheduleParams
  /** the current time, milliseconds (simulated time in the simulator) */
  readonly now: number
  readonly random: RandomSource
}

/**
 * What an SF answers.
 */
export interface ScheduleDecision {
  /** `upgrade`: go now; `wait`: not yet */
  readonly decision: 'wait' | 'upgrade'
  /** why, for people and the event stream */
  readonly reason?: string
  /** announce (or keep announcing) the intent to upgrade next; false withdraws it */
  readonly intent?: boolean
  /** acknowledge this peer's intent in this node's next record */
  readonly defer?: Deferral
  /** hold: a counted peer failed; this node passes the halt on (phase `halted`) */
  readonly halt?: { readonly peer: string, readonly reason: string }
  /** ask again at this time (ms) even if nothing changes; the owner may ask earlier */
  readonly retryAt?: number
}

/**
 * A scheduling function. Must be synchronous, must not mutate its input (it is frozen) and must
 * not reach outside it.
 */
export type ScheduleFunction = (input: ScheduleInput) => ScheduleDecision
