/**
 * Chord client v3, class `chord-client` (system version 2): the same operations as client v2 —
 * `put`, `get`, `delete`, `stamp`, `info` — over v3's client-facing wire, which is v2's. It
 * exists so that system version 2 names the client class too: a class no class upgrade names
 * only advances its version number, and molt then keeps serving its old object under the new
 * number (see the README), so the clients are upgraded along with the nodes.
 *
 * The upgrade: no state, so no TF; both SOs delegate every call (the interfaces are equal).
 */
import { createClientObject, passThrough } from './client.ts'
import { callV3 } from './wire-v3.ts'
import type { AppObject, HostApi, SimulationContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  return createClientObject(host, { chord: 3, wire: callV3, deletes: true })
}

const CALLS = ['put', 'get', 'delete', 'stamp', 'info']

/** v2 callers on a v3 client. */
export async function pastSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: passThrough(delegate, CALLS) }
}

/** v3 callers on a v2 client. */
export async function futureSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: passThrough(delegate, CALLS) }
}
