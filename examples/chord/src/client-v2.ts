/**
 * Chord client v2, class `chord-client` (system version 1): adds `delete([key])` → `{ stamp }`,
 * over the v2 wire. A get of a deleted key answers null.
 *
 * The upgrade: the client keeps no persistent state, so there is no TF. The past-SO answers v1
 * callers (put, get) with this object. The future-SO answers v2 callers on a v1 client: put and
 * get delegate; `delete` can be simulated — the client's only state is its stamp clock, which the
 * SO takes from the v1 object, and the deletion itself happens at the ring node, which decides
 * (a v1 ring node refuses it). So it is implemented, not refused.
 */
import { ChordClient, createClientObject, passThrough } from './client.ts'
import { stamp as checkStamp, str } from './check.ts'
import { callV2 } from './wire-v2.ts'
import type { AppObject, HostApi, SimulationContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  return createClientObject(host, { chord: 2, wire: callV2, deletes: true })
}

/** v1 callers on a v2 client: v1's calls only (no `delete`). */
export async function pastSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: passThrough(delegate, ['put', 'get', 'stamp', 'info']) }
}

/** v2 callers on a v1 client. */
export async function futureSO ({ delegate, host }: SimulationContext): Promise<AppObject> {
  // routes with v2-labelled calls (this SO's host labels them with its version)
  const client = new ChordClient(host, callV2)
  return {
    methods: {
      ...passThrough(delegate, ['put', 'get', 'stamp', 'info']),
      delete: async ([key], ctx) => {
        const stamp = checkStamp(await delegate.call('stamp', []))
        return { stamp: await client.remove(str(key, 'key'), ctx.signal, stamp) }
      }
    }
  }
}
