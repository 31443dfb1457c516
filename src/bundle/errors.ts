/**
 * Typed errors of the bundle service. Each has a stable `name` that callers match on.
 */

/**
 * The bundle is larger than the size its manifest declares: the fetch stopped before reading
 * past the declared size, and nothing of the bundle was stored.
 */
export class BundleTooLargeError extends Error {
  static override readonly name = 'BundleTooLargeError'
  override readonly name = 'BundleTooLargeError'
}

/**
 * A bundle (a directory to pack, or a root or file node from a peer) is malformed: a path that
 * is absolute or climbs out with `..`, an unknown format, a node of the wrong shape.
 */
export class InvalidBundleError extends Error {
  static override readonly name = 'InvalidBundleError'
  override readonly name = 'InvalidBundleError'
}

/**
 * A peer served a block whose bytes do not hash to the CID asked for, or whose size differs
 * from the size the bundle lists. The block was refused.
 */
export class InvalidBlockError extends Error {
  static override readonly name = 'InvalidBlockError'
  override readonly name = 'InvalidBlockError'
}

/**
 * The bundle is not (completely) held by this node.
 */
export class BundleNotFoundError extends Error {
  static override readonly name = 'BundleNotFoundError'
  override readonly name = 'BundleNotFoundError'
}

/**
 * The bundle service is not running (not started yet, or stopped).
 */
export class BundleServiceStoppedError extends Error {
  static override readonly name = 'BundleServiceStoppedError'
  override readonly name = 'BundleServiceStoppedError'
}
