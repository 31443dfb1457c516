/**
 * What the upgrade manager drives and remembers.
 */
import type { CheckReport, TransformRequest } from '../host/index.ts'
import type { CID } from 'multiformats/cid'

/**
 * The steps of one node's upgrade, in order (decisions 8 and 9). Each is persisted before its
 * work starts, so a crash anywhere resumes at the step it interrupted.
 */
export type UpgradePhase =
  | 'accepted'
  | 'fetched'
  | 'future-installed'
  | 'waiting'
  | 'quiescing'
  | 'stopped'
  | 'transforming'
  | 'checking'
  | 'admitted'

/** Every phase, in order. */
export const UPGRADE_PHASES: readonly UpgradePhase[] = [
  'accepted', 'fetched', 'future-installed', 'waiting', 'quiescing', 'stopped', 'transforming', 'checking', 'admitted'
]

/**
 * One version of this node's class and the bundle that implements it.
 */
export interface Incarnation {
  /** system version */
  version: number
  /** class name */
  class: string
  /** the class's bundle at that version */
  bundle: CID
  /**
   * The version whose state namespace (`app/<class>/<stateVersion>`) holds this incarnation's
   * state, when it is not its own: a version the node only advanced to (no class upgrade named
   * its class) keeps running the same object on the same state.
   *
   * @default version
   */
  stateVersion?: number
}

/**
 * A range of old versions answered by one past-SO: the `pastSO` export of `bundle` implements
 * every version from `from` to `to` (they ran the same code), by calling the next link.
 */
export interface PastLink {
  from: number
  to: number
  bundle: CID
  /**
   * The class the node ran at `to`, whose state the past-SO initialises from.
   *
   * @default the current class
   */
  class?: string
  /**
   * The version whose namespace holds that state, when it is not `to` (the node had only
   * advanced to `to`).
   *
   * @default to
   */
  stateVersion?: number
}

/**
 * A future-SO: the `futureSO` export of `bundle` implements `version` by calling the next-older
 * link (or the current object).
 */
export interface FutureLink {
  version: number
  bundle: CID
}

/**
 * What the runtime must run: the current object and its SO chains.
 */
export interface RunSpec {
  current: Incarnation
  /** newest first: the first link calls the current object */
  past: PastLink[]
  /** oldest first: the first link calls the current object */
  future: FutureLink[]
}

/**
 * What the manager needs of whoever runs app code (the isolated host, wired by the node).
 */
export interface UpgradeRuntime {
  /** (re)starts the app with this object and SO chains, ending what ran before */
  run(spec: RunSpec, signal: AbortSignal): Promise<void>
  /**
   * Gets the next version's code ready to run (a worker started, its bundle imported) while the
   * running version still serves, so that none of that falls in the node's time out of service.
   * Optional; a failure here is only logged (the TF or the start then fails the upgrade as it
   * would have anyway).
   */
  prepare?(bundle: CID, signal: AbortSignal): Promise<void>
  /** adds a future-SO link to what runs now */
  installFuture(link: FutureLink, signal: AbortSignal): Promise<void>
  /** asks the running object to reach an update point; host timers stop */
  quiesce(signal: AbortSignal): Promise<void>
  /** ends the running object (its worker) */
  stop(): Promise<void>
  /**
   * Runs a TF into `request.to`, emptying that namespace first (a TF re-run after a crash must
   * not see a half-written state); throws when the TF throws or overruns. With
   * `request.invariants`, it may also check the invariants on the written state and return their
   * report (`undefined`: not checked).
   */
  transform(request: TransformRequest): Promise<CheckReport | undefined>
  /** health check of the running object */
  health(signal: AbortSignal): Promise<CheckReport>
  /** the `invariants` of `bundle` on the state in `namespace` */
  invariants(bundle: CID, namespace: string, signal: AbortSignal): Promise<CheckReport>
}

/**
 * What the node's layer must answer, derived from the manager's state.
 */
export interface ServingState {
  version: number
  class: string
  minimumVersion: number
  /** every old version still answered: through a past-SO, or by the current object (`aliases`) */
  past: number[]
  /**
   * Old versions that ran the same code as the current one (their manifests had no class upgrade
   * for this class): the current object answers them.
   */
  aliases: number[]
  /** versions answered through installed future-SOs */
  future: number[]
  /** true from quiesce until the new (or restored old) version takes traffic */
  quiescing: boolean
}

/**
 * One line of a node's upgrade history.
 */
export interface HistoryEntry {
  /** milliseconds since the epoch */
  at: number
  /** what happened */
  event: 'upgraded' | 'advanced' | 'rolled-back' | 'postponed' | 'reversed'
  from: number
  to: number
  /** the error's name, for failures */
  reason?: string
  /** the error's message, for failures */
  detail?: string
}
