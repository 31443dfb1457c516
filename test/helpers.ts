/**
 * Test helpers. Deadlines here bound how long a test waits for a condition; they are not speed
 * assertions.
 */

import { randomBytes } from 'node:crypto'

let counter = 0

/**
 * Node flags for a child process started from a TypeScript entry point: none where Node strips
 * types itself (≥ 22.18; the project's sources use only erasable syntax), tsx's loader before
 * (a loader thread per process and per app worker it starts).
 */
export const TS_EXEC_ARGV: string[] = process.features.typescript != null && process.features.typescript !== false ? [] : ['--import', 'tsx']

/** A memory-transport listen address unique to this process. */
export function memoryAddress (): string {
  return `/memory/${randomBytes(4).toString('hex')}-${++counter}`
}

/**
 * Polls `check` until it returns a truthy value (returned) or the deadline passes (throws with
 * the description).
 */
export async function eventually<T> (check: () => T | Promise<T>, description: string, deadlineMs = 20_000, intervalMs = 50): Promise<NonNullable<T>> {
  const until = Date.now() + deadlineMs
  let lastError: unknown
  while (Date.now() < until) {
    try {
      const value = await check()
      if (value != null && value !== false) {
        return value as NonNullable<T>
      }
    } catch (err) {
      lastError = err
    }
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
  throw new Error(`timed out waiting for: ${description}${lastError != null ? ` (last error: ${String(lastError)})` : ''}`)
}

/** The error `p` rejects with; fails the test when it resolves. */
export async function rejection (p: Promise<unknown>): Promise<Error> {
  try {
    await p
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a failure')
}
