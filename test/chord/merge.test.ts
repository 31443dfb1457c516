/**
 * Two Chord rings that formed apart (two groups of nodes with no connection between them, as
 * after a partition) merge into one once a single connection joins the groups: every node's
 * periodic rejoin asks a contact for the successor of its own id and adopts a closer one, and
 * stabilize interleaves the rings. Items written on both sides meanwhile move to their owners by
 * hand-off; a key written on both sides keeps the last write by stamp.
 */
import { describe, it, expect, afterEach } from 'vitest'
import type { MoltNode } from '../../src/index.ts'
import { stopAll } from '../nodes.ts'
import { eventually } from '../helpers.ts'
import { call, chordSystem, CHORD_CLIENT, CHORD_NODE, ringCheck, startMember, view } from './harness.ts'

describe('Chord ring merge', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('two rings become one after their groups connect; items written apart all read back, last writer wins', async () => {
    const sys = await chordSystem()
    const groups: Array<{ ring: MoltNode[], client: MoltNode }> = []
    for (let g = 0; g < 2; g++) {
      const ring: MoltNode[] = []
      for (let i = 0; i < 4; i++) {
        // each group's first node holds the genesis bundles: the groups never talk before the merge
        const node = await startMember(sys, { class: CHORD_NODE, pack: i === 0 ? [sys.bundles.node.v1, sys.bundles.client.v1] : [], bootstrap: ring.slice(-2) })
        nodes.push(node)
        ring.push(node)
      }
      const client = await startMember(sys, { class: CHORD_CLIENT, bootstrap: ring.slice(0, 2) })
      nodes.push(client)
      groups.push({ ring, client })
    }
    const [a, b] = groups as [{ ring: MoltNode[], client: MoltNode }, { ring: MoltNode[], client: MoltNode }]
    await eventually(async () => (await ringCheck(a.ring)) === true && (await ringCheck(b.ring)) === true, 'two separate rings', 30_000, 200)
    for (const n of a.ring) expect(n.libp2p.getPeers().some(p => b.ring.some(m => m.peerId.equals(p)))).toBe(false)

    // each side writes its own keys, and both write one key: b's write is the later one
    const values = new Map<string, string>()
    for (let i = 0; i < 20; i++) {
      await call(a.client, a.client, 'put', [`a-${i}`, `from-a-${i}`])
      values.set(`a-${i}`, `from-a-${i}`)
      await call(b.client, b.client, 'put', [`b-${i}`, `from-b-${i}`])
      values.set(`b-${i}`, `from-b-${i}`)
    }
    const first = await call(a.client, a.client, 'put', ['both', 'written-in-a']) as { stamp: [number, string] }
    await new Promise(resolve => setTimeout(resolve, 5))
    const second = await call(b.client, b.client, 'put', ['both', 'written-in-b']) as { stamp: [number, string] }
    expect(second.stamp[0]).toBeGreaterThan(first.stamp[0])
    values.set('both', 'written-in-b')

    // one connection between the groups
    await a.ring[1]!.libp2p.dial(b.ring[2]!.libp2p.getMultiaddrs())
    const all = [...a.ring, ...b.ring]
    await eventually(async () => (await ringCheck(all)) === true, 'one ring of 8', 60_000, 250)

    // every item reaches its owner: each key once, readable from both sides, the later write on top
    await eventually(async () => {
      const views = await Promise.all(all.map(view))
      return views.reduce((sum, v) => sum + v.keys, 0) === values.size
    }, 'each item on exactly one node', 30_000, 250)
    // an item may still sit on a node that hands it to its owner at the next hand-off round
    for (const [key, value] of values) {
      await eventually(async () => {
        expect(await call(a.client, a.client, 'get', [key])).toMatchObject({ value })
        expect(await call(b.client, b.client, 'get', [key])).toMatchObject({ value })
        return true
      }, `${key} reads back from both sides`, 30_000, 250)
    }
    expect(await call(a.client, a.client, 'get', ['both'])).toEqual({ value: 'written-in-b', stamp: second.stamp })
  })
})
