/**
 * Chord v1 (system version 0) on eight real nodes and a client: the ring forms and is correct,
 * items land at the node responsible for their key, and a node stopped and restarted from its
 * data directory keeps its items and gets back, by hand-off, the writes its successor took while
 * it was away — last writer wins by stamp, so the newer writes replace its old copies.
 */
import { describe, it, expect, afterEach } from 'vitest'
import type { MoltNode } from '../../src/index.ts'
import { stopAll } from '../nodes.ts'
import { eventually } from '../helpers.ts'
import { call, chordSystem, CHORD_NODE, ownerOf, ringCheck, startChord, startMember, successorsOf, tempDir, view } from './harness.ts'

describe('Chord v1 ring', () => {
  const nodes: MoltNode[] = []
  const cleanup: Array<() => Promise<void>> = []
  afterEach(async () => {
    await stopAll(nodes)
    for (const c of cleanup.splice(0)) await c()
  })

  it('forms one ring; items live at their responsible node; a restarted node keeps its items and gets back newer writes by hand-off', async () => {
    const sys = await chordSystem()
    const dirs = await Promise.all(Array.from({ length: 8 }, async (_, i) => await tempDir(`v1-${i}`)))
    cleanup.push(...dirs.map(d => d.remove))
    const { ring, clients } = await startChord(sys, 8, 1, { into: nodes, dataDirs: dirs.map(d => d.path) })
    const client = clients[0]!
    await eventually(async () => (await ringCheck(ring)) === true, 'one correct ring of 8', 30_000, 200)

    // every put is acknowledged with the client's stamp and stored at the key's responsible node
    const keys = Array.from({ length: 60 }, (_, i) => `key-${i}`)
    const stamps = new Map<string, [number, string]>()
    for (const key of keys) {
      const answer = await call(client, client, 'put', [key, `old:${key}`]) as { stamp: [number, string] }
      expect(answer.stamp).toEqual([expect.any(Number), client.peerId.toString()])
      stamps.set(key, answer.stamp)
    }
    for (const key of keys) {
      const owner = ownerOf(ring, key)
      expect(await call(owner, owner, 'fetch', [key])).toEqual({ value: `old:${key}`, stamp: stamps.get(key) })
      expect(await call(client, client, 'get', [key])).toEqual({ value: `old:${key}`, stamp: stamps.get(key) })
    }
    // exactly one copy of each: v1 has no replication
    const held = await Promise.all(ring.map(async n => (await view(n)).keys))
    expect(held.reduce((a, b) => a + b, 0)).toBe(keys.length)

    // a node with some items leaves (not the one that packed the bundles)
    const away = ring.slice(1).find(n => keys.filter(k => ownerOf(ring, k) === n).length >= 3)!
    const awayIndex = ring.indexOf(away)
    const mine = keys.filter(k => ownerOf(ring, k) === away)
    const successor = successorsOf(ring, away, 1)[0]!
    await away.stop()
    nodes.splice(nodes.indexOf(away), 1)
    const rest = ring.filter(n => n !== away)
    await eventually(async () => (await ringCheck(rest)) === true, 'the ring closes over the gap', 30_000, 200)

    // meanwhile its successor is responsible: half its keys are overwritten there
    const rewritten = mine.slice(0, Math.ceil(mine.length / 2))
    for (const key of rewritten) {
      const answer = await call(client, client, 'put', [key, `new:${key}`]) as { stamp: [number, string] }
      stamps.set(key, answer.stamp)
      expect(await call(successor, successor, 'fetch', [key])).toEqual({ value: `new:${key}`, stamp: answer.stamp })
    }

    // it comes back from its data directory, with its identity and its old items
    const back = await startMember(sys, { class: CHORD_NODE, dataDir: dirs[awayIndex]!.path, bootstrap: [ring[0]!] })
    nodes.push(back)
    expect(back.peerId.toString()).toBe(away.peerId.toString())
    const again = ring.map(n => n === away ? back : n)
    await eventually(async () => (await ringCheck(again)) === true, 'the restarted node is back in the ring', 30_000, 200)

    // the hand-off: the successor's newer writes reach it and win; its untouched items stay
    await eventually(async () => {
      for (const key of mine) {
        const want = { value: `${rewritten.includes(key) ? 'new' : 'old'}:${key}`, stamp: stamps.get(key) }
        expect(await call(back, back, 'fetch', [key])).toEqual(want)
      }
      return true
    }, 'the restarted node holds the newest write of each of its keys', 20_000, 200)
    // and the successor forgot them once they were acknowledged
    await eventually(async () => {
      for (const key of mine) expect(await call(successor, successor, 'fetch', [key])).toBeNull()
      return true
    }, 'the successor handed the keys over', 20_000, 200)
    // every key reads back its last write, through the client
    for (const key of keys) {
      expect(await call(client, client, 'get', [key])).toEqual({ value: `${rewritten.includes(key) ? 'new' : 'old'}:${key}`, stamp: stamps.get(key) })
    }
    const total = await Promise.all(again.map(async n => (await view(n)).keys))
    expect(total.reduce((a, b) => a + b, 0)).toBe(keys.length)
  })

  it('last writer wins by stamp: an older write is acknowledged but does not overwrite', async () => {
    const sys = await chordSystem()
    const { ring, clients } = await startChord(sys, 3, 1, { into: nodes })
    const client = clients[0]!
    await eventually(async () => (await ringCheck(ring)) === true, 'one ring of 3', 30_000, 200)
    const owner = ownerOf(ring, 'contested')
    // writes as two writers would make them: a later stamp wins whatever the arrival order
    expect(await call(client, owner, 'put', ['contested', 'late', [2000, 'writer-a']])).toEqual({ stamp: [2000, 'writer-a'] })
    expect(await call(client, owner, 'put', ['contested', 'early', [1000, 'writer-b']])).toEqual({ stamp: [2000, 'writer-a'] })
    // same time: the writer id breaks the tie
    expect(await call(client, owner, 'put', ['contested', 'tie', [2000, 'writer-b']])).toEqual({ stamp: [2000, 'writer-b'] })
    expect(await call(client, client, 'get', ['contested'])).toEqual({ value: 'tie', stamp: [2000, 'writer-b'] })
    // a node outside the key's range says so (the client then asks for a lookup)
    const other = ring.find(n => n !== owner)!
    await expect(call(client, other, 'put', ['contested', 'x', [3000, 'w']])).rejects.toMatchObject({ remoteName: 'NotResponsibleError' })
    // the client's stamps are monotonic
    const a = await call(client, client, 'put', ['k', '1']) as { stamp: [number, string] }
    const b = await call(client, client, 'put', ['k', '2']) as { stamp: [number, string] }
    expect(b.stamp[0]).toBeGreaterThan(a.stamp[0])
  })
})
