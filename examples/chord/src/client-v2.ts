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
import { ChordClient, readAnswer } from './client.ts'
import { str, value } from './check.ts'
import { stamp as checkStamp } from './check.ts'
import { callV2 } from './wire-v2.ts'
import { CONFIG } from './config.ts'
import type { AppObject, HostApi, SimulationContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const client = new ChordClient(host, invoke => callV2(invoke, CONFIG.callMs))
  client.start()
  return {
    methods: {
      put: async ([key, v], ctx) => ({ stamp: await client.put(str(key, 'key'), value(v), ctx.signal) }),
      get: async ([key], ctx) => readAnswer(await client.get(str(key, 'key'), ctx.signal)),
      delete: async ([key], ctx) => ({ stamp: await client.remove(str(key, 'key'), ctx.signal) }),
      stamp: async () => client.stamp(),
      info: async () => ({ class: 'chord-client', chord: 2, peer: client.self, members: client.memberList() })
    },
    health: () => ({ ok: true })
  }
}

/** v1 callers on a v2 client: v1's calls only (no `delete`). */
export async function pastSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return {
    methods: {
      put: async (args) => await delegate.call('put', args),
      get: async (args) => await delegate.call('get', args),
      stamp: async () => await delegate.call('stamp', []),
      info: async () => await delegate.call('info', [])
    }
  }
}

/** v2 callers on a v1 client. */
export async function futureSO ({ delegate, host }: SimulationContext): Promise<AppObject> {
  // routes with v2-labelled calls (this SO's host labels them with its version)
  const client = new ChordClient(host, invoke => callV2(invoke, CONFIG.callMs))
  return {
    methods: {
      put: async (args) => await delegate.call('put', args),
      get: async (args) => await delegate.call('get', args),
      delete: async ([key], ctx) => {
        const stamp = checkStamp(await delegate.call('stamp', []))
        return { stamp: await client.remove(str(key, 'key'), ctx.signal, stamp) }
      },
      stamp: async () => await delegate.call('stamp', []),
      info: async () => await delegate.call('info', [])
    }
  }
}
