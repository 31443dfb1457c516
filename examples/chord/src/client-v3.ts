/**
 * Chord client v3, class `chord-client` (system version 2): the same operations as client v2 —
 * `put`, `get`, `delete`, `stamp`, `info` — over v3's client-facing wire, which is v2's. It
 * exists so that system version 2 names the client class too: a class no class upgrade names
 * only advances its version number, and molt then keeps serving its old object under the new
 * number (see the README), so the clients are upgraded along with the nodes.
 *
 * The upgrade: no state, so no TF; both SOs delegate every call (the interfaces are equal).
 */
import { ChordClient, readAnswer } from './client.ts'
import { str, value } from './check.ts'
import { callV3 } from './wire-v3.ts'
import { CONFIG } from './config.ts'
import type { AppObject, HostApi, SimulationContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const client = new ChordClient(host, invoke => callV3(invoke, CONFIG.callMs))
  client.start()
  return {
    methods: {
      put: async ([key, v], ctx) => ({ stamp: await client.put(str(key, 'key'), value(v), ctx.signal) }),
      get: async ([key], ctx) => readAnswer(await client.get(str(key, 'key'), ctx.signal)),
      delete: async ([key], ctx) => ({ stamp: await client.remove(str(key, 'key'), ctx.signal) }),
      stamp: async () => client.stamp(),
      info: async () => ({ class: 'chord-client', chord: 3, peer: client.self, members: client.memberList() })
    },
    health: () => ({ ok: true })
  }
}

function delegating ({ delegate }: SimulationContext): AppObject {
  const to = (method: string) => async (args: Parameters<typeof delegate.call>[1]) => await delegate.call(method, args)
  return { methods: { put: to('put'), get: to('get'), delete: to('delete'), stamp: to('stamp'), info: to('info') } }
}

/** v2 callers on a v3 client. */
export async function pastSO (context: SimulationContext): Promise<AppObject> {
  return delegating(context)
}

/** v3 callers on a v2 client. */
export async function futureSO (context: SimulationContext): Promise<AppObject> {
  return delegating(context)
}
