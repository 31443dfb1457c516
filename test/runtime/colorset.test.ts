/**
 * The ColorSet example (ECOOP'06, slides 000) across three real nodes in mixed mode: many
 * concurrent clients interleave version-0 calls (the paper's IntSet, "v1") and version-1 calls
 * (the paper's ColorSet, "v2") on nodes at both versions, while those nodes upgrade. molt's
 * genesis is version 0, so the paper's v1/v2 are versions 0/1 here.
 *
 * Soundness of the check: calls to a node run in one serial order (decision 7), and every
 * operation — through the current object, the past-SO or the future-SO — advances the node's
 * operation counter `seq` by exactly one and returns it (fixtures colorset-v0/-v1). So the
 * recorded results, sorted by `seq`, are the node's serial order. The test checks that the
 * recorded `seq`s of each node are exactly 1..N (no operation ran unrecorded, none twice), then
 * replays them against a serial model of a ColorSet: every answer, and each node's final state,
 * must equal the model's.
 */
import { isDeepStrictEqual } from 'node:util'
import { describe, it, expect, afterEach } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { createManifest, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import { app, gate } from './apps.ts'
import { seededRandom } from '../../src/schedule/index.ts'

const CLASS = 'colorset'
const ELEMENTS = 5
const COLORS = ['red', 'green', 'blue'] as const


interface Reply { seq: number, result: unknown, stamp: number | null }
interface Op { node: number, label: 0 | 1, method: string, args: Array<number | string>, reply: Reply, unknown?: true }
type Call = Omit<Op, 'reply'>

/** A random operation of a version's type. */
function randomOp (random: () => number, label: 0 | 1): { method: string, args: Array<number | string> } {
  const x = Math.floor(random() * ELEMENTS)
  const r = random()
  if (r < 0.05) return { method: 'list', args: [] }
  if (label === 0) {
    if (r < 0.45) return { method: 'insert', args: [x] }
    if (r < 0.75) return { method: 'delete', args: [x] }
    return { method: 'isIn', args: [x] }
  }
  if (r < 0.45) return { method: 'insert', args: [x, COLORS[Math.floor(random() * COLORS.length)]!] }
  if (r < 0.65) return { method: 'delete', args: [x] }
  if (r < 0.75) return { method: 'isIn', args: [x] }
  return { method: 'getColor', args: [x] }
}

/**
 * The serial model: an abstract ColorSet (element → color, plus the seq of its insertion) and
 * what each operation of each version answers on it (the shadow methods of version 0 included:
 * an element inserted by version 0 is blue).
 */
function replay (ops: Op[]): { expected: Array<{ op: Op, result: unknown, stamp: number | null }>, state: Map<number, { color: string, stamp: number }> } {
  const state = new Map<number, { color: string, stamp: number }>()
  const expected: Array<{ op: Op, result: unknown, stamp: number | null }> = []
  for (const op of ops) {
    const seq = op.reply.seq
    const x = op.args[0] as number
    const item = state.get(x)
    switch (op.method) {
      case 'insert':
        if (item == null) state.set(x, { color: op.label === 0 ? 'blue' : op.args[1] as string, stamp: seq })
        expected.push({ op, result: item == null, stamp: item?.stamp ?? seq })
        break
      case 'delete':
        state.delete(x)
        expected.push({ op, result: item != null, stamp: null })
        break
      case 'isIn':
        expected.push({ op, result: item != null, stamp: item?.stamp ?? null })
        break
      case 'getColor':
        expected.push({ op, result: item?.color ?? null, stamp: item?.stamp ?? null })
        break
      case 'list': {
        const all = [...state.entries()].sort(([a], [b]) => a - b)
        expected.push({ op, result: op.label === 0 ? all.map(([e, i]) => [e, i.stamp]) : all.map(([e, i]) => [e, i.color, i.stamp]), stamp: null })
        break
      }
      default:
        throw new Error(`unknown method ${op.method}`)
    }
  }
  return { expected, state }
}

function sortList (reply: Reply, method: string): Reply {
  return method === 'list' && Array.isArray(reply.result) ? { ...reply, result: [...(reply.result as Array<[number]>)].sort((a, b) => a[0] - b[0]) } : reply
}

/** What a node answered next to what the model answers, operation by operation (unknown outcomes compare equal). */
function compare (ops: Op[]): { got: unknown[], want: unknown[], state: Map<number, { color: string, stamp: number }> } {
  const { expected, state } = replay(ops)
  const got = expected.map(e => ({ seq: e.op.reply.seq, label: e.op.label, method: e.op.method, args: e.op.args, ...(e.op.unknown === true ? { result: e.result, stamp: e.stamp } : sortList(e.op.reply, e.op.method)) }))
  const want = expected.map(e => ({ seq: e.op.reply.seq, label: e.op.label, method: e.op.method, args: e.op.args, result: e.result, stamp: e.stamp }))
  return { got, want, state }
}

/**
 * A node's operations in its serial order. A call that failed `UnavailableError` (its connection
 * broke) may or may not have run; if it ran, its `seq` is missing from the recorded ones. Every way
 * of placing such calls at the missing `seq`s is tried (there are at most a few): the node passes
 * if one of them makes every answer equal the model's — a serialization exists.
 */
function serialize (recorded: Op[], unknown: Call[]): { ops: Op[], ok: boolean } {
  const sorted = [...recorded].sort((p, q) => p.reply.seq - q.reply.seq)
  const last = sorted.at(-1)?.reply.seq ?? 0
  const seen = new Set(sorted.map(o => o.reply.seq))
  const missing = Array.from({ length: last }, (_, i) => i + 1).filter(seq => !seen.has(seq))
  if (seen.size !== sorted.length || missing.length > unknown.length || unknown.length > 6) {
    return { ops: sorted, ok: false }
  }
  let first: Op[] | undefined
  const tryFrom = (i: number, used: Set<number>, placed: Op[]): Op[] | undefined => {
    if (i === missing.length) {
      const ops = [...sorted, ...placed].sort((p, q) => p.reply.seq - q.reply.seq)
      first ??= ops
      const { got, want } = compare(ops)
      return isDeepStrictEqual(got, want) ? ops : undefined
    }
    for (let u = 0; u < unknown.length; u++) {
      if (used.has(u)) continue
      const found = tryFrom(i + 1, new Set([...used, u]), [...placed, { ...unknown[u]!, reply: { seq: missing[i]!, result: null, stamp: null }, unknown: true }])
      if (found != null) return found
    }
    return undefined
  }
  const found = tryFrom(0, new Set(), [])
  return found != null ? { ops: found, ok: true } : { ops: first ?? sorted, ok: false }
}

describe('ColorSet in mixed mode', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('interleaved version-0 and version-1 calls from concurrent clients, across upgrades, leave one state equal to a serial model', async () => {
    const keys = await makeKeys()
    const intset = await app('colorset-v0')
    const v0 = await buildBundle(intset)
    const genesis: GenesisConfig = { system: 'test', policy: policyOf(keys), classes: [{ name: CLASS, bundle: v0.root, bundleSize: v0.size }], createdAt: 1 }
    const gates = [gate(), gate(), gate()]
    for (let i = 0; i < 3; i++) {
      nodes.push(await startNode(genesis, {
        fetchBundles: true,
        pack: i === 0 ? [intset] : [],
        bootstrap: i === 0 ? [] : nodes[0]!.libp2p.getMultiaddrs().map(String),
        app: { class: CLASS, schedule: async ({ signal }) => { await gates[i]!.wait(signal) }, manager: { retryMs: 100 } }
      }))
    }
    const [a, b, c] = nodes as [MoltNode, MoltNode, MoltNode]
    await c.libp2p.dial(b.libp2p.getMultiaddrs())

    const ops: Op[] = []
    let notRun = 0
    const unknown: Call[] = []
    const call = async (client: MoltNode, node: number, label: 0 | 1, method: string, args: Array<number | string>): Promise<Reply> => {
      const reply = await client.app!.layer.call(nodes[node]!.peerId, method, args, { version: label, class: CLASS }) as Reply
      ops.push({ node, label, method, args, reply })
      return reply
    }
    /**
     * Every client calls every node with every label, each (client, node, label) pair in its own
     * sequential stream of random operations, all pairs at once. A stream goes on until it made
     * `count` operations and `until()` holds. `UpgradingError` (the node is between versions)
     * means the call did not run; `UnavailableError` (a broken connection) means its outcome is
     * unknown, and the check below accounts for both possibilities. Any other failure fails the test.
     */
    const burst = async (seed: number, labels: Array<0 | 1>, count: number, until: () => boolean = () => true): Promise<void> => {
      const streams: Array<Promise<void>> = []
      nodes.forEach((client, ci) => {
        for (let node = 0; node < nodes.length; node++) {
          for (const label of labels) {
            // seeded, so every run issues the same operations
            const random = seededRandom(seed * 1000 + ci * 100 + node * 10 + label, 'colorset')
            streams.push((async () => {
              for (let done = 0; done < count || !until();) {
                const { method, args } = randomOp(random, label)
                try {
                  await call(client, node, label, method, args)
                  done++
                } catch (err) {
                  if ((err as Error).name === 'UnavailableError') {
                    // the connection broke: the call may or may not have run (see serialize)
                    unknown.push({ node, label, method, args })
                    continue
                  }
                  if ((err as Error).name !== 'UpgradingError') throw err
                  notRun++
                  await new Promise(resolve => setTimeout(resolve, 5))
                }
              }
            })())
          }
        }
      })
      await Promise.all(streams)
    }

    // version 0 everywhere: IntSet clients only
    await burst(1, [0], 10)

    // version 1, the ColorSet: a upgrades, b and c wait with its future-SO
    const colorset = await app('colorset-v1')
    const packed = await a.bundles.packFiles(colorset)
    let manifest = await createManifest({
      system: 'test', version: 1, previous: a.head().cid, createdAt: 2,
      classUpgrades: [{ oldClass: CLASS, newClass: CLASS, bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'gated' } }]
    })
    for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
    await a.publish(manifest)
    gates[0]!.open()
    await eventually(() => a.app!.manager.current.version === 1 && a.app!.manager.phase == null, 'a at version 1', 30_000)
    await eventually(() => [b, c].every(n => n.app!.manager.phase?.phase === 'waiting'), 'b and c wait with the future-SO installed', 30_000)
    expect([a, b, c].map(n => n.app!.manager.current.version)).toEqual([1, 0, 0])

    // the slides' sequence on a version-0 node, through its future-SO (the direct approach):
    // SO.insertColor(7, red); O.delete(7); O.insert(7); SO.getColor(7) is blue, not a stale red
    expect((await call(a, 1, 1, 'insert', [7, 'red'])).result).toBe(true)
    expect((await call(a, 1, 1, 'getColor', [7])).result).toBe('red')
    expect((await call(c, 1, 0, 'delete', [7])).result).toBe(true)
    expect((await call(c, 1, 0, 'insert', [7])).result).toBe(true)
    expect((await call(a, 1, 1, 'getColor', [7])).result).toBe('blue')
    // and on the upgraded node, a version-0 insert of a present element keeps its color
    expect((await call(b, 0, 1, 'insert', [8, 'green'])).result).toBe(true)
    expect((await call(c, 0, 0, 'insert', [8])).result).toBe(false)
    expect((await call(b, 0, 1, 'getColor', [8])).result).toBe('green')

    // mixed mode: version-0 and version-1 calls on nodes at both versions
    await burst(2, [0, 1], 15)

    // b upgrades while the clients keep calling it (its TF reads the future-SO's colors)
    gates[1]!.open()
    await burst(3, [0, 1], 10, () => b.app!.manager.current.version === 1 && b.app!.manager.phase == null)
    expect(b.app!.host.status().past).toEqual([[0, 0]])
    await burst(4, [0, 1], 10)

    // then c, the same way
    gates[2]!.open()
    await burst(5, [0, 1], 10, () => c.app!.manager.current.version === 1 && c.app!.manager.phase == null)
    await burst(6, [0, 1], 5)
    expect([a, b, c].map(n => n.app!.manager.current.version)).toEqual([1, 1, 1])
    // every node's final state, read by a version-1 and a version-0 caller (recorded and checked like the rest)
    for (let node = 0; node < 3; node++) {
      await call(a, node, 1, 'list', [])
      await call(c, node, 0, 'list', [])
    }

    // the check against the serial model, node by node
    for (let node = 0; node < 3; node++) {
      const { ops: mine, ok } = serialize(ops.filter(o => o.node === node), unknown.filter(u => u.node === node))
      // the serial order is complete: seqs are exactly 1..N (no call ran unaccounted for, none twice)
      expect(mine.map(o => o.reply.seq)).toEqual(mine.map((_, i) => i + 1))
      // every answer is the model's
      const { got, want, state } = compare(mine)
      expect(got).toEqual(want)
      expect(ok).toBe(true)
      const final = mine.findLast(o => o.method === 'list' && o.label === 1)!
      expect(sortList(final.reply, 'list').result).toEqual([...state.entries()].sort(([p], [q]) => p - q).map(([x, i]) => [x, i.color, i.stamp]))
      // both versions were really exercised on this node
      expect(new Set(mine.map(o => `${o.label}:${o.method}`)).size).toBeGreaterThanOrEqual(8)
    }
    expect(ops.length).toBeGreaterThan(1000)
    // eslint-disable-next-line no-console
    console.log(`colorset: ${ops.length} operations checked, ${notRun} refused with UpgradingError while a node was between versions, ${unknown.length} with an unknown outcome (UnavailableError)`)
  })
})
