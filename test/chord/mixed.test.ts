/**
 * Chord v1 → v2 in mixed mode on eight real nodes and two clients (HotOS'03 §5, §7). System
 * version 1 upgrades both classes; half the ring nodes and one client are held at version 0 by
 * their schedules. Calls cross versions in both directions through the SOs: a v2 client's gets
 * and puts reach v1 nodes through their future-SO, a v1 client's reach v2 nodes through their
 * past-SO, and the ring itself (stabilize, lookups, hand-off) runs across both. A v2 `delete` of
 * a key whose node is still at v1 fails `SimulationRefusedError` (criterion 2) and the value
 * stays readable. After every node upgraded, every value reads back, deletes stay deleted, and
 * v2's anti-entropy has put each item on its primary and r-1 = 2 successors.
 */
import { describe, it, expect, afterEach } from 'vitest'
import type { MoltNode } from '../../src/index.ts'
import { stopAll } from '../nodes.ts'
import { eventually } from '../helpers.ts'
import { gate } from '../runtime/apps.ts'
import { atVersion, call, chordSystem, CHORD_CLIENT, CHORD_NODE, ownerOf, publishUpgrade, ringCheck, startChord, successorsOf, view } from './harness.ts'

describe('Chord v1 → v2 in mixed mode', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('routes both ways through the SOs, refuses deletes on v1 nodes, and ends with every value and r copies', { timeout: 240_000 }, async () => {
    const sys = await chordSystem()
    const gates = Array.from({ length: 10 }, () => gate())
    const { ring, clients } = await startChord(sys, 8, 2, { into: nodes, gates })
    const [c2, c1] = clients as [MoltNode, MoltNode]
    await eventually(async () => (await ringCheck(ring)) === true, 'one ring of 8', 30_000, 200)

    // version 0: written through the v1 client
    const before = Array.from({ length: 40 }, (_, i) => `before-${i}`)
    const values = new Map<string, string | null>()
    for (const key of before) {
      await call(c1, c1, 'put', [key, `v0:${key}`])
      values.set(key, `v0:${key}`)
    }

    // version 1 installs Chord v2 and client v2; nodes 0, 2, 4, 6 and client c2 go ahead
    await publishUpgrade(sys, ring[0]!, 1, [{ class: CHORD_NODE, files: sys.bundles.node.v2 }, { class: CHORD_CLIENT, files: sys.bundles.client.v2 }])
    const upgraded = ring.filter((_, i) => i % 2 === 0)
    const held = ring.filter((_, i) => i % 2 === 1)
    for (const [i, n] of [...ring, ...clients].entries()) if (upgraded.includes(n) || n === c2) gates[i]!.open()
    await atVersion([...upgraded, c2], 1, 'half the ring and one client at version 1')
    await eventually(() => [...held, c1].every(n => n.app!.manager.phase?.phase === 'waiting' && n.app!.manager.serving().future.includes(1)), 'the rest wait at 0 with the future-SO installed', 60_000, 100)
    expect((await view(upgraded[0]!)).chord).toBe(2)
    expect((await view(held[0]!)).chord).toBe(1)

    // one ring across both versions (stabilize and notify cross the SOs both ways)
    await eventually(async () => (await ringCheck(ring)) === true, 'one ring across v1 and v2 nodes', 30_000, 200)

    // keys on v1 nodes and on v2 nodes, written and read by both clients
    const during = Array.from({ length: 60 }, (_, i) => `during-${i}`)
    const onV1 = during.filter(k => held.includes(ownerOf(ring, k)))
    const onV2 = during.filter(k => upgraded.includes(ownerOf(ring, k)))
    expect(onV1.length).toBeGreaterThan(3)
    expect(onV2.length).toBeGreaterThan(3)
    for (const [i, key] of during.entries()) {
      const writer = i % 2 === 0 ? c2 : c1
      const answer = await call(writer, writer, 'put', [key, `v1:${key}`]) as { stamp: [number, string] }
      expect(answer.stamp[1]).toBe(writer.peerId.toString())
      values.set(key, `v1:${key}`)
    }
    for (const key of [...before, ...during]) {
      // the v2 client reads v1 nodes through their future-SO, the v1 client v2 nodes through their past-SO
      expect(await call(c2, c2, 'get', [key])).toMatchObject({ value: values.get(key) })
      expect(await call(c1, c1, 'get', [key])).toMatchObject({ value: values.get(key) })
    }

    // criterion 2: a v1 node cannot delete; the value stays for everyone
    const refusedKey = onV1[0]!
    await expect(call(c2, c2, 'delete', [refusedKey])).rejects.toMatchObject({ name: 'SimulationRefusedError' })
    expect(await call(c2, c2, 'get', [refusedKey])).toMatchObject({ value: values.get(refusedKey) })
    expect(await call(c1, c1, 'get', [refusedKey])).toMatchObject({ value: values.get(refusedKey) })
    // a node's future-SO refuses replication too (a v1 node holds no copies for others)
    await expect(call(upgraded[0]!, held[0]!, 'replicate', [[{ k: 'x', s: [1, 'w'], v: 'y' }]])).rejects.toMatchObject({ name: 'SimulationRefusedError' })

    // a delete on a v2 node: a tombstone, absent to v2 and to v1 callers (through the past-SO)
    const deleted = [onV2[0]!, onV2[1]!]
    for (const key of deleted) {
      const answer = await call(c2, c2, 'delete', [key]) as { stamp: [number, string] }
      expect(answer.stamp[1]).toBe(c2.peerId.toString())
      values.set(key, null)
      expect(await call(c2, c2, 'get', [key])).toBeNull()
      expect(await call(c1, c1, 'get', [key])).toBeNull()
    }
    // a v1 put older than the tombstone loses; a newer one brings the key back
    const owner = ownerOf(ring, deleted[0]!)
    expect(await call(c1, owner, 'put', [deleted[0]!, 'stale', [1, 'old-writer']])).toMatchObject({ stamp: [expect.any(Number), c2.peerId.toString()] })
    expect(await call(c2, c2, 'get', [deleted[0]!])).toBeNull()

    // the rest upgrade; their TFs carry v1's records
    for (const g of gates) g.open()
    await atVersion([...ring, ...clients], 1, 'every node at version 1')
    await eventually(async () => (await ringCheck(ring)) === true, 'one ring of v2 nodes', 30_000, 200)

    // every value reads back, deletes stay deleted, and delete now works where it was refused
    for (const [key, value] of values) {
      const got = await call(c1, c1, 'get', [key])
      if (value == null) expect(got).toBeNull()
      else expect(got).toMatchObject({ value })
    }
    await call(c2, c2, 'delete', [refusedKey])
    expect(await call(c1, c1, 'get', [refusedKey])).toBeNull()
    values.set(refusedKey, null)

    // r = 3 copies: the primary and its two successors, filled by anti-entropy
    await eventually(async () => {
      for (const [key, value] of values) {
        const primary = ownerOf(ring, key)
        for (const holder of [primary, ...successorsOf(ring, primary, 2)]) {
          const copy = await call(holder, holder, 'peek', [key]) as { v?: unknown, d?: boolean } | null
          if (copy == null) return false
          if (value == null ? copy.d !== true : copy.v !== value) return false
        }
      }
      return true
    }, 'each item on its primary and 2 successors', 30_000, 250)
    const infos = await Promise.all(ring.map(view))
    expect(infos.every(i => i.chord === 2)).toBe(true)
    expect(infos.reduce((a, i) => a + i.keys + i.tombstones, 0)).toBe(values.size * 3)
  })
})
