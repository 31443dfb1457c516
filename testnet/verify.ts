/**
 * The lost-write check, from the clients' own records: after the system quiesced, every key any
 * client wrote is read back, and must show the last acknowledged write by the example's rule —
 * last writer wins by stamp `[t, writer]` — or a write that was never acknowledged (which may
 * have executed) and is newer than it. An acknowledged put whose value is gone or replaced by an
 * older one is a lost write; so is an acknowledged delete whose key came back.
 *
 * @packageDocumentation
 */
import { compareStamps } from './workload.ts'
import type { ReadBack, Stamp, WorkloadRecord, WriteRecord } from './ipc.ts'

/** Why a key failed the check. */
export interface LostWrite {
  key: string
  /** the acknowledged write that should show */
  expected: { kind: 'put' | 'delete', value?: string, stamp: Stamp, client: string }
  /** what was read */
  got: { value: string | null, stamp: Stamp | null } | { error: string }
  reason: string
}

/** The check's outcome. */
export interface WriteCheck {
  /** keys with at least one acknowledged write, each read back */
  checked: number
  /** acknowledged puts and deletes in the records */
  ackedPuts: number
  ackedDeletes: number
  /** keys whose read shows a newer unacknowledged write (allowed) */
  newerUnacked: number
  /** keys whose read failed (counted as lost: the write cannot be shown to be there) */
  unreadable: number
  lost: LostWrite[]
}

/** Every key any record names, sorted. */
export function keysOf (records: readonly WorkloadRecord[]): string[] {
  return [...new Set(records.flatMap(r => r.writes.map(w => w.key)))].sort()
}

/**
 * Checks the reads of every key against every client's record of its writes. `reads` may hold
 * several reads of one key (each client reads the shared keys): each must pass.
 */
export function checkWrites (records: readonly WorkloadRecord[], reads: readonly ReadBack[]): WriteCheck {
  const byKey = new Map<string, Array<WriteRecord & { client: string }>>()
  let ackedPuts = 0
  let ackedDeletes = 0
  for (const r of records) {
    for (const w of r.writes) {
      let list = byKey.get(w.key)
      if (list == null) byKey.set(w.key, list = [])
      list.push({ ...w, client: r.client })
      if (w.status === 'acked') {
        if (w.kind === 'put') ackedPuts++
        else ackedDeletes++
      }
    }
  }
  const readsByKey = new Map<string, ReadBack[]>()
  for (const read of reads) {
    let list = readsByKey.get(read.key)
    if (list == null) readsByKey.set(read.key, list = [])
    list.push(read)
  }

  const result: WriteCheck = { checked: 0, ackedPuts, ackedDeletes, newerUnacked: 0, unreadable: 0, lost: [] }
  for (const [key, writes] of byKey) {
    let last: (WriteRecord & { client: string, stamp: Stamp }) | undefined
    for (const w of writes) {
      if (w.status !== 'acked' || w.stamp == null) continue
      if (last == null || compareStamps(w.stamp, last.stamp) > 0) last = { ...w, stamp: w.stamp }
    }
    if (last == null) continue
    result.checked++
    const expected = { kind: last.kind, ...(last.value != null ? { value: last.value } : {}), stamp: last.stamp, client: last.client }
    const uncertainPuts = new Set(writes.filter(w => w.status === 'uncertain' && w.kind === 'put').map(w => w.value))
    const uncertainDelete = writes.some(w => w.status === 'uncertain' && w.kind === 'delete')
    const keyReads = readsByKey.get(key) ?? []
    if (keyReads.length === 0) {
      result.unreadable++
      result.lost.push({ key, expected, got: { error: 'NotReadError' }, reason: 'the key was not read back' })
      continue
    }
    let newer = false
    for (const read of keyReads) {
      if (!read.ok) {
        result.unreadable++
        result.lost.push({ key, expected, got: { error: read.error }, reason: `the read failed (${read.error})` })
        break
      }
      const got = { value: read.value, stamp: read.stamp }
      const newerThanLast = read.stamp != null && compareStamps(read.stamp, last.stamp) > 0
      if (last.kind === 'put') {
        if (read.value === last.value) continue
        if (read.value === null && uncertainDelete) { newer = true; continue }
        if (read.value !== null && uncertainPuts.has(read.value) && newerThanLast) { newer = true; continue }
        result.lost.push({
          key,
          expected,
          got,
          reason: read.value === null
            ? 'an acknowledged put is gone'
            : `an acknowledged put was replaced by ${read.stamp != null && compareStamps(read.stamp, last.stamp) < 0 ? 'an older' : 'an unexplained'} value`
        })
        break
      } else {
        if (read.value === null) continue
        if (uncertainPuts.has(read.value) && newerThanLast) { newer = true; continue }
        result.lost.push({ key, expected, got, reason: 'an acknowledged delete came back' })
        break
      }
    }
    if (newer) result.newerUnacked++
  }
  return result
}
