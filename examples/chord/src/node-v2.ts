/**
 * Chord v2, class `chord-node` (system version 1): every item on its primary and the primary's
 * r-1 successors, and `delete` as a stamped tombstone. Wire-incompatible with v1 (wire-v2.ts).
 *
 * The upgrade v1 → v2, all of it exported here:
 * - TF: node-local. v1's records become v2's, stamps kept; the replicas are not made here (a TF
 *   never moves data between nodes, decision 8) but by v2's anti-entropy once it runs.
 * - past-SO (v1 callers on a v2 node): the v1 wire served by calling the v2 object. A tombstone
 *   is absence to a v1 caller; a v1 put older than a tombstone is acknowledged and loses, as any
 *   older write does.
 * - future-SO (v2 callers on a v1 node): the v2 wire served by calling the v1 object. Routing,
 *   reads, writes and hand-off of values delegate. `erase` fails `SimulationRefusedError`: a v1
 *   node cannot forget a key, and a tombstone kept in the SO would hide the value from v2
 *   callers only while v1 callers still read it (HotOS'03 §7.1, criterion 2). Replication and
 *   anti-entropy are refused too (see the README): a copy written into the v1 object would be
 *   handed back and forgotten by v1's hand-off, and one kept in the SO's store would answer v2
 *   and v1 callers differently if the node became responsible. So a v1 node is simply not a
 *   replica until it upgrades; the primary's anti-entropy adds the copy afterwards.
 */
import { CONFIG } from './config.ts'
import { delegateInvoke } from './client.ts'
import { createNode, transformRecords } from './node.ts'
import { everyRecord } from './store.ts'
import { callV1, codecV1, serveV1 } from './wire-v1.ts'
import { callV2, codecV2, serveV2 } from './wire-v2.ts'
import type { AppObject, HostApi, ReadonlyAppStore, SimulationContext, TransformContext } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  const node = await createNode(host, {
    chord: 2,
    replicas: CONFIG.replicas,
    // its own range and r-1 predecessors' (the replicas it holds), plus one of slack so that a
    // ring change does not make copies bounce
    zone: CONFIG.replicas + 1,
    tombstones: true,
    codec: codecV2,
    wire: callV2
  }, serveV2)
  return node.object
}

export async function transform (context: TransformContext): Promise<void> {
  await transformRecords(context, codecV1, codecV2)
}

export async function pastSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: serveV1(callV2(delegateInvoke(delegate))) }
}

export async function futureSO ({ delegate }: SimulationContext): Promise<AppObject> {
  return { methods: serveV2(callV1(delegateInvoke(delegate))) }
}

export const invariants = {
  /** every record decodes, with a stamp [t, writer] */
  records: async (state: ReadonlyAppStore) => await everyRecord(state, codecV2.prefix, (key, v) => codecV2.decode(key, v) != null),
  /** nothing is left in v1's layout */
  noV1Records: async (state: ReadonlyAppStore) => await everyRecord(state, codecV1.prefix, () => false)
}
