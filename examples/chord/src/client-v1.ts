/**
 * Chord client v1, class `chord-client` (system version 0): `put([key, value])` → `{ stamp }`,
 * `get([key])` → `{ value, stamp } | null`, over the v1 wire.
 */
import { ChordClient, readAnswer } from './client.ts'
import { str, value } from './check.ts'
import { callV1 } from './wire-v1.ts'
import { CONFIG } from './config.ts'
import type { AppObject, HostApi } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const client = new ChordClient(host, invoke => callV1(invoke, CONFIG.callMs))
  client.start()
  return {
    methods: {
      put: async ([key, v], ctx) => ({ stamp: await client.put(str(key, 'key'), value(v), ctx.signal) }),
      get: async ([key], ctx) => readAnswer(await client.get(str(key, 'key'), ctx.signal)),
      // the client's clock is its state: newer versions' SOs take their stamps from here
      stamp: async () => client.stamp(),
      info: async () => ({ class: 'chord-client', chord: 1, peer: client.self, members: client.memberList() })
    },
    health: () => ({ ok: true })
  }
}
