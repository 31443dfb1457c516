/**
 * Typed errors of the schedule part: status records, the fleet view, scheduling functions and the
 * simulator. Each has a stable `name` that callers, metrics and logs match on; a record that raises
 * one changes no state.
 */

/** Base of every schedule error. */
export class ScheduleError extends Error {
  static override readonly name: string = 'ScheduleError'
  override readonly name: string = 'ScheduleError'
}

/** The bytes are not a well-formed status record (wrong shape, types, ranges or encoding). */
export class StatusDecodeError extends ScheduleError {
  static override readonly name = 'StatusDecodeError'
  override readonly name = 'StatusDecodeError'
}

/** The encoded status record is larger than the limit. */
export class StatusTooLargeError extends ScheduleError {
  static override readonly name = 'StatusTooLargeError'
  override readonly name = 'StatusTooLargeError'
}

/**
 * The record's signature does not verify against the key of the peer it names, the peer id
 * carries no public key, or the record came from another peer than the one it names.
 */
export class BadStatusSignatureError extends ScheduleError {
  static override readonly name = 'BadStatusSignatureError'
  override readonly name = 'BadStatusSignatureError'
}

/** The record belongs to another system. */
export class WrongStatusSystemError extends ScheduleError {
  static override readonly name = 'WrongStatusSystemError'
  override readonly name = 'WrongStatusSystemError'
}

/** A record at or below the sequence number already held for its peer: a replay or a stale copy. */
export class StaleStatusError extends ScheduleError {
  static override readonly name = 'StaleStatusError'
  override readonly name = 'StaleStatusError'
}

/** The schedule named by a manifest is neither built in nor exported by the bundle. */
export class UnknownScheduleError extends ScheduleError {
  static override readonly name = 'UnknownScheduleError'
  override readonly name = 'UnknownScheduleError'
}

/** A schedule's parameters are missing or out of range. */
export class InvalidScheduleParamsError extends ScheduleError {
  static override readonly name = 'InvalidScheduleParamsError'
  override readonly name = 'InvalidScheduleParamsError'
}

/** A scheduling function threw, or returned something that is not a decision. It counts as "wait". */
export class ScheduleFailedError extends ScheduleError {
  static override readonly name = 'ScheduleFailedError'
  override readonly name = 'ScheduleFailedError'
}

/** A scheduling function ran past its time budget and was cut off. It counts as "wait". */
export class ScheduleTimeoutError extends ScheduleError {
  static override readonly name = 'ScheduleTimeoutError'
  override readonly name = 'ScheduleTimeoutError'
}

/** A simulation scenario is malformed or out of range. */
export class InvalidScenarioError extends ScheduleError {
  static override readonly name = 'InvalidScenarioError'
  override readonly name = 'InvalidScenarioError'
}
