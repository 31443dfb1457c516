/**
 * Helpers of the host tests: fixture bundles, a host on an in-memory store, a call shortcut.
 */
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { openStore, type MoltStore } from '../../src/state/index.ts'
import { createHost, type AppHost, type HostComponents, type HostInit, type HostInvokeRequest } from '../../src/host/index.ts'
import type { Value } from '../../src/host/index.ts'

export const APPS = fileURLToPath(new URL('../fixtures/apps/', import.meta.url))

/** A fixture bundle as a directory source. */
export function app (name: string): { dir: string } {
  return { dir: join(APPS, name) }
}

/** A fixture bundle as files (written by the host to its own directory). */
export async function appFiles (name: string): Promise<{ files: Map<string, Uint8Array> }> {
  const files = new Map<string, Uint8Array>()
  for (const f of await readdir(join(APPS, name))) {
    files.set(f, new Uint8Array(await readFile(join(APPS, name, f))))
  }
  return { files }
}

export interface TestHost {
  host: AppHost
  store: MoltStore
}

/** Fast watchdog settings so the tests that need it do not wait long. */
export const FAST: HostInit = { watchdogMs: 600, heartbeatMs: 100, callTimeoutMs: 3000, startTimeoutMs: 15_000 }

export async function testHost (init: HostInit = {}, components: Partial<HostComponents> = {}): Promise<TestHost> {
  const store = await openStore({ memory: true })
  const host = createHost({ store, self: { peerId: 'self-peer' }, ...components }, { ...FAST, ...init })
  return { host, store }
}

/** Calls `method` on the current object (or the given target). */
export async function call (host: AppHost, method: string, args: Value[] = [], target: HostInvokeRequest['target'] = { kind: 'current', version: 1 }): Promise<Value> {
  return await host.invoke({ target, method, args, peer: 'caller-peer', caller: { version: target.version, class: 'counter' } })
}
