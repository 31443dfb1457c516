/**
 * Typed errors of the upgrade manager, each with a stable `name`.
 */

/** Base of the manager's errors. */
export class UpgradeError extends Error {
  static override readonly name: string = 'UpgradeError'
  override readonly name: string = 'UpgradeError'
}

/** The new version's health check failed before admission. */
export class HealthCheckFailedError extends UpgradeError {
  static override readonly name = 'HealthCheckFailedError'
  override readonly name = 'HealthCheckFailedError'
}

/** An invariant failed on the transformed state before admission. */
export class InvariantFailedError extends UpgradeError {
  static override readonly name = 'InvariantFailedError'
  override readonly name = 'InvariantFailedError'
}

/** The new version could not be started. */
export class StartFailedError extends UpgradeError {
  static override readonly name = 'StartFailedError'
  override readonly name = 'StartFailedError'
}

/** Not enough free disk space to run a TF safely. */
export class InsufficientSpaceError extends UpgradeError {
  static override readonly name = 'InsufficientSpaceError'
  override readonly name = 'InsufficientSpaceError'
}

/** After admission, going back needs a declared reverse TF, and this version has none. */
export class NoReverseTransformError extends UpgradeError {
  static override readonly name = 'NoReverseTransformError'
  override readonly name = 'NoReverseTransformError'
}

/** The manager's persisted record is unreadable or of an unknown format. */
export class ManagerStateError extends UpgradeError {
  static override readonly name = 'ManagerStateError'
  override readonly name = 'ManagerStateError'
}

/** A named crash point was reached under `MOLT_CRASH_AT` (tests only). */
export class CrashPointError extends UpgradeError {
  static override readonly name = 'CrashPointError'
  override readonly name = 'CrashPointError'
}
