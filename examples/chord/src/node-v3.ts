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
import { delegateInvoke } from './client.ts'
import { createNode, transformRecords } from './node.ts'
import { everyRecord } from './store.ts'
import { callV2, codecV2, serveV2 } from './wire-v2.ts'
import { callV3, codecV3, serveV3 } from './wire-v3.ts'
import type { AppObject, HostApi, ReadonlyAppStore, SimulationContext, TransformContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const node = await createNode(host, {
    chord: 3,
    replicas: CONFIG.replicas,
    zone: CONFIG.replicas + 1,
    tombstones: true,
    codec: codecV3,
    wire: callV3
  }, serveV3)
  return node.object
}

export async function transform (context: TransformContext): Promise<void> {
  await transformRecords(context, codecV2, codecV3)
}

export async function pastSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: serveV2(callV3(delegateInvoke(delegate))) }
}

export async function futureSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: serveV3(callV2(delegateInvoke(delegate))) }
}

export const invariants = {
  /** every record decodes in the tuple layout */
  records: async (state: ReadonlyAppStore) => await everyRecord(state, codecV3.prefix, (key, v) => codecV3.decode(key, v) != null)
}
