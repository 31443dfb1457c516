/**
 * Real libp2p nodes (memory transport, local profile) carrying a bundle service.
 */
import { randomBytes } from 'node:crypto'
import { MemoryDatastore } from 'datastore-core'
import { createOverlay, type MoltLibp2p } from '../../src/overlay/index.ts'
import { createBundleService, type BundleService, type BundleServiceInit } from '../../src/bundle/index.ts'
import type { Datastore } from 'interface-datastore'

export const SYSTEM = 'btest'
let counter = 0

export interface TestNode {
  libp2p: MoltLibp2p
  bundles: BundleService
  datastore: Datastore
  stop(): Promise<void>
}

/** a bare overlay node (no bundle service), e.g. to play a misbehaving peer */
export async function overlay (): Promise<MoltLibp2p> {
  return await createOverlay({ system: SYSTEM, profile: 'local', listen: [`/memory/bundle-test-${process.pid}-${counter++}`] })
}

export async function bundleNode (init: Partial<BundleServiceInit> = {}, datastore: Datastore = new MemoryDatastore()): Promise<TestNode> {
  const libp2p = await overlay()
  const bundles = createBundleService({ libp2p, datastore }, { system: SYSTEM, ...init })
  await bundles.start()
  let stopped = false
  return {
    libp2p,
    bundles,
    datastore,
    async stop () {
      if (stopped) return
      stopped = true
      await bundles.stop()
      await libp2p.stop()
    }
  }
}

export async function connect (a: TestNode | MoltLibp2p, b: TestNode | MoltLibp2p): Promise<void> {
  const from = 'bundles' in a ? a.libp2p : a
  const to = 'bundles' in b ? b.libp2p : b
  await from.dial(to.getMultiaddrs())
}

/** random files summing to about `total` bytes */
export function randomFiles (count: number, total: number): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>()
  const each = Math.floor(total / count)
  for (let i = 0; i < count; i++) {
    files.set(i === 0 ? 'index.js' : `lib/module-${i}.js`, new Uint8Array(randomBytes(i === count - 1 ? total - each * (count - 1) : each)))
  }
  return files
}

/** total bytes and number of blocks stored under a bundle datastore */
export async function storedBlocks (datastore: Datastore): Promise<{ blocks: number, bytes: number }> {
  let blocks = 0
  let bytes = 0
  for await (const { value } of datastore.query({ prefix: '/blocks' })) {
    blocks++
    bytes += value.byteLength
  }
  return { blocks, bytes }
}

export function sameFiles (a: Map<string, Uint8Array>, b: Map<string, Uint8Array>): boolean {
  if (a.size !== b.size) return false
  for (const [path, bytes] of a) {
    const other = b.get(path)
    if (other == null || Buffer.compare(Buffer.from(bytes), Buffer.from(other)) !== 0) return false
  }
  return true
}
