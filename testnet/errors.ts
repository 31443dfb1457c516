/**
 * Typed failures of the testnet launcher. Each has a stable `name`; `main.ts` maps
 * {@link TestnetUsageError} to exit status 2 and every other failure to exit status 1.
 *
 * @packageDocumentation
 */

/** Base of the testnet's own failures. */
export class TestnetError extends Error {
  static override readonly name: string = 'TestnetError'
  override readonly name: string = 'TestnetError'
}

/** A bad flag or flag value: exit status 2, with the usage. */
export class TestnetUsageError extends TestnetError {
  static override readonly name = 'TestnetUsageError'
  override readonly name = 'TestnetUsageError'
}

/** A member (node or client) could not start or was not ready in time, or exited when it should not have. */
export class MemberFailedError extends TestnetError {
  static override readonly name = 'MemberFailedError'
  override readonly name = 'MemberFailedError'
}

/** A member did not answer a request in time, or answered with an error. */
export class MemberRequestError extends TestnetError {
  static override readonly name = 'MemberRequestError'
  override readonly name = 'MemberRequestError'
  /** the `name` of the error the member reported, when it reported one */
  readonly remoteName: string | undefined
  constructor (message: string, options?: ErrorOptions & { remoteName?: string }) {
    super(message, options)
    this.remoteName = options?.remoteName
  }
}

/** A stage of the scenario (ring stabilisation, rollout, quiesce) did not finish in time. */
export class StageTimeoutError extends TestnetError {
  static override readonly name = 'StageTimeoutError'
  override readonly name = 'StageTimeoutError'
}

/** The Chord example (examples/chord/build.ts) is missing or does not keep its contract. */
export class ChordExampleError extends TestnetError {
  static override readonly name = 'ChordExampleError'
  override readonly name = 'ChordExampleError'
}

/** The run was interrupted (SIGINT / SIGTERM, or its signal aborted). */
export class InterruptedError extends TestnetError {
  static override readonly name = 'InterruptedError'
  override readonly name = 'InterruptedError'
}
