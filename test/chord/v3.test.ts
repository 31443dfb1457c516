/**
 * Chord v3 (system version 2) next to a node still running Chord v1 (system version 0): the v1
 * node's calls reach v3 nodes through two past-SOs (v1 → v2 shipped in v2's bundle, v2 → v3 in
 * v3's). Records survive two TFs. Once version 0 is retired (minimum supported version 1), calls
 * labelled 0 fail `VersionRetiredError`; the v1 node catches up, through both TFs, and the ring
 * is whole again with every record.
 *
 * (The other direction, v3 callers on the v1 node, would need its future-SO of version 2, which
 * molt installs only once the node is at version 1; calls labelled 2 wait and fail
 * `VersionUnknownError` meanwhile. So this test reads keys of that node only at the end.)
 */
import { describe, it, expect, afterEach } from 'vitest'
import type { MoltNode } from '../../src/index.ts'
import { stopAll } from '../nodes.ts'
import { eventually } from '../helpers.ts'
import { atVersion, call, callAs, ceilings, chordSystem, CHORD_CLIENT, CHORD_NODE, ownerOf, publishUpgrade, retire, ringCheck, startChord, view } from './harness.ts'

describe('Chord v3 and a chain of two past-SOs', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('a v1 node reaches v3 nodes through two past-SOs; after retirement calls labelled 0 fail VersionRetiredError; it catches up through both TFs', { timeout: 300_000 }, async () => {
    const sys = await chordSystem()
    // ring nodes 0..3 go to version 2 (Chord v3), node 4 stays at 0 (Chord v1); the client goes along
    const limits = [2, 2, 2, 2, 0, 2]
    const { ring, clients } = await startChord(sys, 5, 1, { into: nodes, schedules: ceilings(limits) })
    const client = clients[0]!
    const old = ring[4]!
    const current = ring.slice(0, 4)
    await eventually(async () => (await ringCheck(ring)) === true, 'one ring of 5', 30_000, 200)

    const values = new Map<string, string | null>()
    for (let i = 0; i < 30; i++) {
      await call(client, client, 'put', [`k-${i}`, `v0:${i}`])
      values.set(`k-${i}`, `v0:${i}`)
    }

    await publishUpgrade(sys, ring[0]!, 1, [{ class: CHORD_NODE, files: sys.bundles.node.v2 }, { class: CHORD_CLIENT, files: sys.bundles.client.v2 }])
    await atVersion([...current, client], 1, 'at version 1')
    // version 2 upgrades the clients too (client v3: v2's operations on v3's client-facing wire)
    await publishUpgrade(sys, ring[0]!, 2, [{ class: CHORD_NODE, files: sys.bundles.node.v3! }, { class: CHORD_CLIENT, files: sys.bundles.client.v3! }])
    await atVersion([...current, client], 2, 'at version 2')
    expect(old.app!.manager.current.version).toBe(0)

    // the v3 nodes serve version 1 and version 0 through one past-SO each, newest first
    expect(current[0]!.app!.host.status()).toMatchObject({ version: 2, past: [[1, 1], [0, 0]] })
    expect((await view(current[0]!)).chord).toBe(3)

    // the v1 node's calls, labelled 0, are answered on v1's wire by v3 objects
    // a v3 node that owns some of the keys (with random ids, one node's arc may hold none of 30)
    const owned = (n: MoltNode): number => [...values.keys()].filter(k => ownerOf(ring, k) === n).length
    const target = [...current].sort((a, b) => owned(b) - owned(a))[0]!
    const state = await call(old, target, 'state') as Record<string, unknown>
    expect(Object.keys(state).sort()).toEqual(['predecessor', 'predecessors', 'successors'])
    expect(await call(old, target, 'info')).toMatchObject({ class: 'chord-node', chord: 3, successors: expect.any(Array) })
    const key = [...values.keys()].find(k => ownerOf(ring, k) === target)!
    expect(await call(old, target, 'get', [key])).toMatchObject({ value: values.get(key) })
    // the same object answers v3 callers on v2's client-facing wire, and v2 callers through one past-SO
    expect(await call(target, target, 'read', [key])).toMatchObject({ k: key, v: values.get(key) })
    await expect(call(target, target, 'neighbours')).rejects.toMatchObject({ remoteName: 'MethodNotFoundError' })
    expect(await callAs(1, client, target, 'neighbours')).toEqual([expect.any(String), expect.any(Array), expect.any(Array)])
    expect(await call(target, target, 'ring')).toMatchObject({ p: expect.any(String), s: expect.any(Array) })

    // records survived two TFs; the client (v3) works against v3 nodes
    for (const [k, v] of values) {
      if (ownerOf(ring, k) !== old) expect(await call(client, client, 'get', [k])).toMatchObject({ value: v })
    }
    const gone = [...values.keys()].find(k => ownerOf(ring, k) !== old)!
    await call(client, client, 'delete', [gone])
    values.set(gone, null)
    expect(await call(client, client, 'get', [gone])).toBeNull()
    // a v1 caller sees the deletion as absence, through both past-SOs
    expect(await call(old, ownerOf(ring, gone), 'get', [gone])).toBeNull()

    // version 0 retired: the v1 node's calls fail before reaching any SO
    await retire(sys, ring[0]!, 1, 2, 1)
    await eventually(() => current.every(n => n.app!.manager.serving().minimumVersion === 1 && n.app!.host.status().state === 'running' && n.app!.host.status().past.length === 1), 'the v3 nodes reloaded without the past-SO of version 0', 30_000, 100)
    // calls labelled 0 (made by another node: the v1 node itself now catches up at once, without
    // its schedule, and may already call at version 1)
    const peer = current.find(n => n !== target)!
    await expect(callAs(0, peer, target, 'state')).rejects.toMatchObject({ name: 'VersionRetiredError' })
    await expect(callAs(0, peer, target, 'get', [key])).rejects.toMatchObject({ name: 'VersionRetiredError' })

    // the v1 node upgrades after all (TF v1 → v2 then v2 → v3) and the ring is whole again
    limits[4] = 2
    await atVersion([old], 2, 'the last node at version 2')
    await eventually(async () => (await ringCheck(ring)) === true, 'one ring of v3 nodes', 30_000, 200)
    for (const [k, v] of values) {
      const got = await call(client, client, 'get', [k])
      if (v == null) expect(got).toBeNull()
      else expect(got).toMatchObject({ value: v })
    }
  })
})
