/**
 * Typed failures of the upgrade layer (decision 6). Each has a stable `name`; each crosses the
 * wire as `{ n: name, m: message }` and is re-thrown on the caller as the same class.
 *
 * `UnavailableError` and `MessageTooLargeError` are the overlay's own, re-used here so a caller
 * matches one name whatever protocol failed.
 */
import { MessageTooLargeError, UnavailableError } from '../overlay/errors.ts'

export { MessageTooLargeError, UnavailableError }

/** Base of the layer's own failures. */
export class LayerError extends Error {
  static override readonly name: string = 'LayerError'
  override readonly name: string = 'LayerError'
}

/**
 * The callee is quiescing for an upgrade (decision 9) and answers no call at any version. The
 * call was not executed: retrying it, here later or at another peer, is safe.
 */
export class UpgradingError extends LayerError {
  static override readonly name = 'UpgradingError'
  override readonly name = 'UpgradingError'
}

/**
 * The call's version is below the callee's minimum supported version: its past-SO is retired.
 * The caller must upgrade; no peer of the system will answer this version any more.
 */
export class VersionRetiredError extends LayerError {
  static override readonly name = 'VersionRetiredError'
  override readonly name = 'VersionRetiredError'
}

/**
 * No object at the callee implements the call's version: an older version with no past-SO
 * installed, or a newer version whose future-SO was not installed within the call's deadline.
 */
export class VersionUnknownError extends LayerError {
  static override readonly name = 'VersionUnknownError'
  override readonly name = 'VersionUnknownError'
}

/**
 * A simulation object refused a call it cannot implement without breaking consistency
 * (HotOS'03 §7, criterion 2). SOs throw an error with this name; the caller sees this class.
 */
export class SimulationRefusedError extends LayerError {
  static override readonly name = 'SimulationRefusedError'
  override readonly name = 'SimulationRefusedError'
}

/**
 * The app object threw while executing the call. Only the message (and the app error's name, as
 * `remoteName`) crosses the wire, never a stack.
 */
export class RemoteError extends LayerError {
  static override readonly name = 'RemoteError'
  override readonly name = 'RemoteError'
  /** the `name` of the error the app threw, e.g. `TypeError` */
  readonly remoteName: string | undefined

  constructor (message: string, options?: ErrorOptions & { remoteName?: string }) {
    super(message, options)
    this.remoteName = options?.remoteName
  }
}

/**
 * The call's deadline passed: at the caller before a reply arrived, or at the callee before the
 * object answered.
 */
export class CallTimeoutError extends LayerError {
  static override readonly name = 'CallTimeoutError'
  override readonly name = 'CallTimeoutError'
}

/**
 * Bytes that are not a well-formed request or reply of the RPC protocol. A callee answers a
 * malformed request with this error; a malformed reply surfaces as `UnavailableError` whose
 * `cause` is this error.
 */
export class RpcDecodeError extends LayerError {
  static override readonly name = 'RpcDecodeError'
  override readonly name = 'RpcDecodeError'
}

/** Every error name that crosses the wire as itself; any other name arrives as `RemoteError`. */
export const WIRE_ERROR_NAMES = [
  'UpgradingError', 'VersionRetiredError', 'VersionUnknownError', 'SimulationRefusedError',
  'RemoteError', 'CallTimeoutError', 'RpcDecodeError', 'UnavailableError', 'MessageTooLargeError'
] as const

/** An error name that crosses the wire as itself. */
export type WireErrorName = typeof WIRE_ERROR_NAMES[number]

const RETRYABLE = new Set<string>(['UpgradingError', 'UnavailableError', 'CallTimeoutError'])

/**
 * Whether a failed call may succeed at another peer (or later at this one): `UpgradingError`,
 * `UnavailableError` and `CallTimeoutError` are retryable; `VersionRetiredError`,
 * `VersionUnknownError`, `SimulationRefusedError`, `RemoteError`, `RpcDecodeError`,
 * `MessageTooLargeError` and aborts are not.
 *
 * Only `UpgradingError` guarantees the call did not execute; after `UnavailableError` or
 * `CallTimeoutError` it may have. Supply alternative peers only for calls safe to repeat.
 */
export function isRetryable (err: unknown): boolean {
  return err instanceof Error && RETRYABLE.has(err.name)
}

/**
 * Builds the typed error for a name and message received in a reply.
 */
export function errorFromWire (name: string, message: string, remoteName?: string): Error {
  switch (name) {
    case 'UpgradingError': return new UpgradingError(message)
    case 'VersionRetiredError': return new VersionRetiredError(message)
    case 'VersionUnknownError': return new VersionUnknownError(message)
    case 'SimulationRefusedError': return new SimulationRefusedError(message)
    case 'CallTimeoutError': return new CallTimeoutError(message)
    case 'RpcDecodeError': return new RpcDecodeError(message)
    case 'UnavailableError': return new UnavailableError(message)
    case 'MessageTooLargeError': return new MessageTooLargeError(message)
    default: return new RemoteError(message, remoteName != null ? { remoteName } : {})
  }
}
