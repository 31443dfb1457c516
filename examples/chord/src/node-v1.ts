/**
 * Chord v1, class `chord-node` — the genesis (system version 0). A ring with one copy of each
 * item, at the node responsible for its key; writes are last-writer-wins by stamp.
 */
import { createNode } from './node.ts'
import { callV1, codecV1, serveV1 } from './wire-v1.ts'
import type { AppObject, HostApi } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const node = await createNode(host, {
    chord: 1,
    replicas: 1,
    zone: 1,
    tombstones: false,
    codec: codecV1,
    wire: callV1
  }, serveV1)
  return node.object
}
