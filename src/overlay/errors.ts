/**
 * Typed errors of the overlay. Each has a stable `name` that callers match on.
 */

/**
 * An option passed to molt was missing, malformed or out of range.
 */
export class InvalidOptionError extends Error {
  static override readonly name = 'InvalidOptionError'
  override readonly name = 'InvalidOptionError'
}

/**
 * The local profile was asked to listen on, or dial, an address outside loopback or memory.
 */
export class PublicAddressRefusedError extends Error {
  static override readonly name = 'PublicAddressRefusedError'
  override readonly name = 'PublicAddressRefusedError'
}

/**
 * A peer sent a message larger than the protocol allows.
 */
export class MessageTooLargeError extends Error {
  static override readonly name = 'MessageTooLargeError'
  override readonly name = 'MessageTooLargeError'
}

/**
 * A request could not be answered: the peer was unreachable, reset the stream or hung up early.
 */
export class UnavailableError extends Error {
  static override readonly name = 'UnavailableError'
  override readonly name = 'UnavailableError'
}
