/**
 * Typed errors of the host. Each has a stable `name` that callers match on, except
 * {@link AppError}, which carries the name of the error the app threw so the upgrade layer can
 * forward it (a `SimulationRefusedError` thrown by an SO must reach the caller as itself).
 */

/** Base of the host's own failures. */
export class HostError extends Error {
  static override readonly name: string = 'HostError'
  override readonly name: string = 'HostError'
}

/**
 * A call or request reached the host before any version was loaded (or after `stop()`).
 */
export class HostNotLoadedError extends HostError {
  static override readonly name = 'HostNotLoadedError'
  override readonly name = 'HostNotLoadedError'
}

/**
 * A run spec, link or option is malformed: an SO chain with a gap, a future-SO that is not the
 * next version, a class name that cannot name a store namespace.
 */
export class InvalidHostSpecError extends HostError {
  static override readonly name = 'InvalidHostSpecError'
  override readonly name = 'InvalidHostSpecError'
}

/**
 * A version could not start: its bundle failed to import (a bare import, a syntax error), lacks
 * an export it needs, needs a molt API this host does not offer, or its `create` (or an SO
 * factory) threw or did not finish within the start deadline. Nothing of it is running; the
 * manager rolls back.
 */
export class AppLoadError extends HostError {
  static override readonly name = 'AppLoadError'
  override readonly name = 'AppLoadError'
}

/**
 * A bundle declares a `moltApi` range that excludes this host's {@link MOLT_APP_API}.
 */
export class AppApiMismatchError extends HostError {
  static override readonly name = 'AppApiMismatchError'
  override readonly name = 'AppApiMismatchError'
}

/**
 * The object a call targets is not loaded: a past or future version with no SO link, or a
 * named object this node does not run.
 */
export class TargetNotLoadedError extends HostError {
  static override readonly name = 'TargetNotLoadedError'
  override readonly name = 'TargetNotLoadedError'
}

/**
 * The target object has no method of that name.
 */
export class MethodNotFoundError extends HostError {
  static override readonly name = 'MethodNotFoundError'
  override readonly name = 'MethodNotFoundError'
}

/**
 * A call did not finish within the host's per-call deadline (`callTimeoutMs`). Its atomic
 * section was released; if the worker stopped answering, the watchdog restarts it.
 */
export class HostTimeoutError extends HostError {
  static override readonly name = 'HostTimeoutError'
  override readonly name = 'HostTimeoutError'
}

/**
 * The worker ended while the call ran: it crashed, ran out of memory, hung and was killed by the
 * watchdog, or was replaced by a new version. The call may have partly executed.
 */
export class WorkerCrashedError extends HostError {
  static override readonly name = 'WorkerCrashedError'
  override readonly name = 'WorkerCrashedError'
}

/**
 * The worker failed to restart `maxRestarts` times in a row; the host serves nothing until the
 * next `load`.
 */
export class WorkerFailedError extends HostError {
  static override readonly name = 'WorkerFailedError'
  override readonly name = 'WorkerFailedError'
}

/**
 * The running version did not reach its update point (quiesce, in-flight calls drained) before
 * the deadline. The upgrade is postponed; `resume()` restarts the version's timers.
 */
export class QuiesceTimeoutError extends HostError {
  static override readonly name = 'QuiesceTimeoutError'
  override readonly name = 'QuiesceTimeoutError'
}

/**
 * A TF (or reverse TF) threw; the fresh namespace it wrote is left for the manager to wipe.
 */
export class TransformFailedError extends HostError {
  static override readonly name = 'TransformFailedError'
  override readonly name = 'TransformFailedError'
}

/**
 * A TF or invariant check overran its deadline and its worker was ended.
 */
export class TransformTimeoutError extends HostError {
  static override readonly name = 'TransformTimeoutError'
  override readonly name = 'TransformTimeoutError'
}

/**
 * The app wrote to a store it may only read (a TF's old or future-SO state, an invariant's
 * state, the object's store during an observer).
 */
export class ReadOnlyStoreError extends HostError {
  static override readonly name = 'ReadOnlyStoreError'
  override readonly name = 'ReadOnlyStoreError'
}

/**
 * An app store key is malformed (segments of `[A-Za-z0-9._-]` separated by `/`), or a value is
 * not a dag-cbor value.
 */
export class InvalidStoreKeyError extends HostError {
  static override readonly name = 'InvalidStoreKeyError'
  override readonly name = 'InvalidStoreKeyError'
}

/**
 * What the app (or an SO) threw while running a call, reported for that call only. Its `name`
 * is the app error's own name (`TypeError`, `SimulationRefusedError`...), so the upgrade layer
 * forwards `SimulationRefusedError` as itself and anything else as `RemoteError` carrying that
 * name. Match it with `instanceof AppError` or {@link isAppError}.
 */
export class AppError extends Error {
  /** always true: tells an app failure from a host failure whatever its name */
  readonly appError = true

  constructor (name: string, message: string) {
    super(message)
    this.name = name
  }
}

/** Whether an error is one the app threw (rather than one of the host's own). */
export function isAppError (err: unknown): err is AppError {
  return err instanceof AppError
}
