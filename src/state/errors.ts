/**
 * The data directory was written by a newer molt, or holds something that is not a molt store.
 */
export class StoreFormatError extends Error {
  static override readonly name = 'StoreFormatError'
  override readonly name = 'StoreFormatError'
}

/**
 * The store could not be opened (missing permissions, locked by another process, ...).
 */
export class StoreOpenError extends Error {
  static override readonly name = 'StoreOpenError'
  override readonly name = 'StoreOpenError'
}
