/**
 * A node's items: an in-memory index over its persistent store. The object is the only writer of
 * its namespace, so the index is kept exactly in step (write-through), and reads and digests cost
 * no crossing to the store. After any restart the index is rebuilt from the store.
 *
 * Writes follow last-writer-wins by stamp `[t, writer]`: a record replaces the stored one only if
 * its stamp is strictly greater. Equal stamps are the same write (a client never reuses one), so
 * re-delivery, hand-off and replication are idempotent and commute.
 */
import { compareStamps, inRange, keyToSegment, ringId, segmentToKey } from './ring.ts'
import type { AppStore, ReadonlyAppStore, Rec, Value } from './types.ts'

/** How a version lays its records out in its store. */
export interface RecordCodec {
  /** key prefix of the records, e.g. `d/` */
  readonly prefix: string
  encode(rec: Rec): Value
  decode(key: string, value: Value): Rec | undefined
}

interface Entry {
  rec: Rec
  id: string
  h1: number
  h2: number
}

function fnv (text: string, seed: number): number {
  let h = seed >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}

/** Bytes a record roughly takes on the wire, to keep batches under the layer's message limit. */
export function recordSize (rec: Rec): number {
  const v = rec.v
  let size = rec.key.length * 3 + rec.w.length + 24
  if (typeof v === 'string') size += v.length * 3
  else if (v instanceof Uint8Array) size += v.byteLength
  else if (v != null) size += JSON.stringify(v, (_k, x: unknown) => x instanceof Uint8Array ? 'x'.repeat(x.byteLength) : x).length * 3
  return size
}

/** Splits records into batches of at most `bytes` (a record bigger than that goes alone). */
export function batches (recs: Rec[], bytes: number): Rec[][] {
  const out: Rec[][] = []
  let batch: Rec[] = []
  let size = 0
  for (const rec of recs) {
    const s = recordSize(rec)
    if (batch.length > 0 && size + s > bytes) {
      out.push(batch)
      batch = []
      size = 0
    }
    batch.push(rec)
    size += s
  }
  if (batch.length > 0) out.push(batch)
  return out
}

/** Is `a` newer than `b`? */
export function newer (a: Rec, b: Rec | undefined | null): boolean {
  return b == null || compareStamps(a.t, a.w, b.t, b.w) > 0
}

/** For invariants: true if every record under `prefix` passes `ok`, else the first that does not. */
export async function everyRecord (state: ReadonlyAppStore, prefix: string, ok: (key: string, value: Value) => boolean): Promise<true | string> {
  for await (const [storeKey, value] of state.entries(prefix)) {
    const key = segmentToKey(storeKey.slice(prefix.length))
    if (key == null || !ok(key, value)) return `malformed record at ${storeKey}`
  }
  return true
}

export class RecordStore {
  private readonly map = new Map<string, Entry>()
  private dead = 0

  private readonly store: AppStore
  private readonly codec: RecordCodec

  constructor (store: AppStore, codec: RecordCodec) {
    this.store = store
    this.codec = codec
  }

  async load (): Promise<void> {
    this.map.clear()
    this.dead = 0
    const prefix = this.codec.prefix
    for await (const [storeKey, value] of this.store.entries(prefix)) {
      const key = segmentToKey(storeKey.slice(prefix.length))
      if (key == null) continue
      const rec = this.codec.decode(key, value)
      if (rec != null) this.index(rec)
    }
  }

  private index (rec: Rec): void {
    const old = this.map.get(rec.key)
    if (old?.rec.v === null) this.dead--
    if (rec.v === null) this.dead++
    const text = `${rec.key}\u0000${rec.t}\u0000${rec.w}\u0000${rec.v === null ? 'x' : 'v'}`
    this.map.set(rec.key, { rec, id: old?.id ?? ringId(rec.key), h1: fnv(text, 0x811c9dc5), h2: fnv(text, 0x050c5d1f) })
  }

  get (key: string): Rec | undefined {
    return this.map.get(key)?.rec
  }

  /** Stores `rec` if it is newer than what is stored; true if it was. */
  async merge (rec: Rec): Promise<boolean> {
    if (!newer(rec, this.map.get(rec.key)?.rec)) return false
    await this.store.put(this.codec.prefix + keyToSegment(rec.key), this.codec.encode(rec))
    this.index(rec)
    return true
  }

  /**
   * Forgets a record handed to its owner, but only if it is still the one that was handed over:
   * a newer write that arrived meanwhile stays (and moves in a later round).
   */
  async removeIf (rec: Rec): Promise<boolean> {
    const cur = this.map.get(rec.key)?.rec
    if (cur == null || cur.t !== rec.t || cur.w !== rec.w) return false
    await this.store.delete(this.codec.prefix + keyToSegment(rec.key))
    if (cur.v === null) this.dead--
    this.map.delete(rec.key)
    return true
  }

  get size (): number {
    return this.map.size
  }

  get tombstones (): number {
    return this.dead
  }

  /** Every record with its ring id. */
  * entries (): IterableIterator<{ rec: Rec, id: string }> {
    for (const e of this.map.values()) yield e
  }

  /** Records whose ids are in (lo, hi] and end with `suffix`. */
  range (lo: string, hi: string, suffix = ''): Rec[] {
    const out: Rec[] = []
    for (const e of this.map.values()) {
      if (inRange(lo, e.id, hi) && e.id.endsWith(suffix)) out.push(e.rec)
    }
    return out
  }

  /** How many records have ids in (lo, hi]. */
  count (lo: string, hi: string): number {
    let n = 0
    for (const e of this.map.values()) if (inRange(lo, e.id, hi)) n++
    return n
  }

  /**
   * Digests of the 16 buckets of (lo, hi] below `suffix` (bucket c: ids ending in `c + suffix`),
   * two 32-bit xors each. Xor is order-free, so both ends compute it from their own index alone.
   */
  digest (lo: string, hi: string, suffix = ''): number[] {
    const sums = new Array<number>(32).fill(0)
    const at = 16 - suffix.length - 1
    for (const e of this.map.values()) {
      if (!inRange(lo, e.id, hi) || !e.id.endsWith(suffix)) continue
      const c = parseInt(e.id[at]!, 16)
      sums[c * 2] = (sums[c * 2]! ^ e.h1) >>> 0
      sums[c * 2 + 1] = (sums[c * 2 + 1]! ^ e.h2) >>> 0
    }
    return sums
  }

  /** Records in key order after `after` (inspection). */
  page (after: string | null, limit: number): Rec[] {
    const keys = [...this.map.keys()].sort()
    const from = after == null ? 0 : keys.findIndex(k => k > after)
    if (from < 0) return []
    return keys.slice(from, from + limit).map(k => this.map.get(k)!.rec)
  }
}
