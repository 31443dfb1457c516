/**
 * Shared pieces of the runtime tests: fixture apps as bundle files, and gates that hold a node's
 * upgrade in mixed mode until the test opens them.
 */
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

/** Where the fixture apps live. */
export const APPS = fileURLToPath(new URL('../fixtures/apps/', import.meta.url))

/** A fixture app's bundle files (one self-contained `index.js`). */
export async function app (name: string): Promise<Map<string, Uint8Array>> {
  return new Map([['index.js', await readFile(`${APPS}${name}/index.js`)]])
}

/** A gate: a node's schedule says "upgrade now" once it is opened (or gives up when the node stops). */
export interface Gate {
  open: () => void
  wait: (signal?: AbortSignal) => Promise<void>
}

/** Makes a closed gate. */
export function gate (): Gate {
  let open!: () => void
  const opened = new Promise<void>(resolve => { open = resolve })
  return {
    open,
    wait: async (signal) => {
      await new Promise<void>((resolve, reject) => {
        signal?.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
        void opened.then(resolve)
      })
    }
  }
}
