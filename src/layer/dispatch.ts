/**
 * The dispatch rule: which object answers a call labelled with a version, given what the node
 * runs and has installed. A pure function, so the rule is tested and documented in one place.
 */
import { InvalidOptionError } from '../overlay/errors.ts'
import { UpgradingError, VersionRetiredError, VersionUnknownError } from './errors.ts'

/**
 * What the node runs, as far as the layer needs to know. The owner (the manager, through the
 * node) sets it with {@link UpgradeLayer.update} at every step of an upgrade.
 */
export interface LayerState {
  /** the node's current system version; outgoing calls are labelled with it */
  version: number
  /** the node's current class */
  class: string
  /** calls below this version fail `VersionRetiredError` */
  minimumVersion: number
  /** versions below `version` for which a past-SO is installed */
  past: readonly number[]
  /** versions above `version` for which a future-SO is installed */
  future: readonly number[]
  /** while true every call, at every version, answers `UpgradingError` (decision 9) */
  quiescing: boolean
}

/**
 * Which object executes a call: the current object, or the SO chain link of that version. A
 * past-SO for version `p` calls the object of `p + 1`; a future-SO for `f` calls that of `f - 1`.
 */
export interface DispatchTarget {
  /** current object, past-SO chain or future-SO chain */
  kind: 'current' | 'past' | 'future'
  /** the version the target implements (the call's label) */
  version: number
}

/** The outcome of the rule: a target, a typed failure, or wait for a future-SO to be installed. */
export type Route =
  | { target: DispatchTarget }
  | { error: Error }
  | { wait: true }

/** The state a normalised {@link LayerState} keeps for fast dispatch. */
export interface DispatchState extends LayerState {
  readonly pastSet: ReadonlySet<number>
  readonly futureSet: ReadonlySet<number>
}

function checkVersion (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidOptionError(`${what}: must be a non-negative safe integer (got ${String(value)})`)
  }
  return value
}

/**
 * Validates a layer state and indexes its SO chains. Throws `InvalidOptionError` on a malformed
 * state (a past-SO at or above the current version, a future-SO at or below it...).
 */
export function normaliseState (state: LayerState): DispatchState {
  const version = checkVersion(state.version, 'version')
  const minimumVersion = checkVersion(state.minimumVersion, 'minimumVersion')
  if (minimumVersion > version) {
    throw new InvalidOptionError(`minimumVersion: ${minimumVersion} is above the current version ${version}`)
  }
  if (typeof state.class !== 'string' || state.class.length > 128) {
    throw new InvalidOptionError('class: must be a string of at most 128 characters')
  }
  if (!Array.isArray(state.past) || !Array.isArray(state.future)) {
    throw new InvalidOptionError('past, future: must be arrays of versions')
  }
  const past = state.past.map(v => checkVersion(v, 'past'))
  const future = state.future.map(v => checkVersion(v, 'future'))
  if (past.some(v => v >= version)) {
    throw new InvalidOptionError(`past: past-SOs must be below the current version ${version}`)
  }
  if (future.some(v => v <= version)) {
    throw new InvalidOptionError(`future: future-SOs must be above the current version ${version}`)
  }
  return {
    version,
    class: state.class,
    minimumVersion,
    past: Object.freeze([...past].sort((a, b) => a - b)),
    future: Object.freeze([...future].sort((a, b) => a - b)),
    quiescing: state.quiescing === true,
    pastSet: new Set(past),
    futureSet: new Set(future)
  }
}

/**
 * The dispatch rule for a call labelled `c` at a node whose current version is `V`:
 *
 * - quiescing → `UpgradingError`, at every version;
 * - `c === V` → the current object;
 * - `c < V` → `VersionRetiredError` below the minimum supported version; the past-SO chain when
 *   past-SOs for every version from `c` to `V - 1` are installed; else `VersionUnknownError`;
 * - `c > V` → the future-SO chain when future-SOs for every version from `V + 1` to `c` are
 *   installed; else wait for the owner to install them.
 */
export function route (state: DispatchState, c: number): Route {
  if (state.quiescing) {
    return { error: new UpgradingError(`upgrading: version ${state.version} is quiescing`) }
  }
  const v = state.version
  if (c === v) {
    return { target: { kind: 'current', version: c } }
  }
  if (c < v) {
    if (c < state.minimumVersion) {
      return { error: new VersionRetiredError(`version ${c} is retired: the minimum supported version is ${state.minimumVersion}`) }
    }
    for (let p = c; p < v; p++) {
      if (!state.pastSet.has(p)) {
        return { error: new VersionUnknownError(`version ${c} is not supported: no past-SO for version ${p} at version ${v}`) }
      }
    }
    return { target: { kind: 'past', version: c } }
  }
  for (let f = v + 1; f <= c; f++) {
    if (!state.futureSet.has(f)) {
      return { wait: true }
    }
  }
  return { target: { kind: 'future', version: c } }
}
