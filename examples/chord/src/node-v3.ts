/**
 * Chord v3, class `chord-node` (system version 2): v2's behaviour on a new node-to-node wire
 * and store layout (compact tuples, renamed calls; wire-v3.ts). Its client-facing calls are
 * v2's, so clients are not upgraded for it.
 *
 * The upgrade v2 → v3: a TF that rewrites every record into the tuple layout, and SOs that only
 * translate (nothing v3 does is beyond v2, so nothing is refused). A v1 caller on a v3 node goes
 * through v2's past-SO and then this one; once version 0 (Chord v1) is retired, its calls fail
 * `VersionRetiredError` before reaching either.
 */
import { CONFIG } from './config.ts'
import { hostInvoke } from './client.ts'
import { createNode, HINT_KEY } from './node.ts'
import { callV2, codecV2, serveV2 } from './wire-v2.ts'
import { callV3, codecV3, serveV3 } from './wire-v3.ts'
import { segmentToKey } from './ring.ts'
import type { AppObject, HostApi, ReadonlyAppStore, SimulationContext, TransformContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const node = await createNode(host, {
    chord: 3,
    replicas: CONFIG.replicas,
    zone: CONFIG.replicas + 1,
    tombstones: true,
    codec: codecV3,
    remote: (h) => (peer) => callV3(hostInvoke(h, peer), CONFIG.callMs)
  }, serveV3)
  return node.object
}

export async function transform ({ old, next }: TransformContext): Promise<void> {
  for await (const [storeKey, value] of old.entries(codecV2.prefix)) {
    const segment = storeKey.slice(codecV2.prefix.length)
    const key = segmentToKey(segment)
    const rec = key == null ? undefined : codecV2.decode(key, value)
    if (rec != null) await next.put(codecV3.prefix + segment, codecV3.encode(rec))
  }
  const hint = await old.get(HINT_KEY)
  if (hint !== undefined) await next.put(HINT_KEY, hint)
}

export async function pastSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: serveV2(callV3(async (method, args) => await delegate.call(method, args))) }
}

export async function futureSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: serveV3(callV2(async (method, args) => await delegate.call(method, args))) }
}

export const invariants = {
  records: async (state: ReadonlyAppStore): Promise<true | string> => {
    for await (const [storeKey, value] of state.entries(codecV3.prefix)) {
      const key = segmentToKey(storeKey.slice(codecV3.prefix.length))
      if (key == null || codecV3.decode(key, value) == null) return `malformed record at ${storeKey}`
    }
    return true
  }
}
