/**
 * The Chord example's pure parts, without nodes: ring arithmetic, the last-writer-wins store and
 * its digests, each version's wire served and spoken (and the SOs, which are compositions of
 * them: what v1 cannot express is refused), and the TFs.
 */
import { describe, it, expect } from 'vitest'
import { createHash } from 'node:crypto'
import { MemoryDatastore } from 'datastore-core'
import { createAppStore } from '../../src/host/index.ts'
import { between, fingerStart, inRange, keyToSegment, ringId, segmentToKey } from '../../examples/chord/src/ring.ts'
import { RecordStore, batches } from '../../examples/chord/src/store.ts'
import { callV1, codecV1, serveV1 } from '../../examples/chord/src/wire-v1.ts'
import { callV2, codecV2, serveV2 } from '../../examples/chord/src/wire-v2.ts'
import { callV3, codecV3, serveV3 } from '../../examples/chord/src/wire-v3.ts'
import * as nodeV2 from '../../examples/chord/src/node-v2.ts'
import * as nodeV3 from '../../examples/chord/src/node-v3.ts'
import { named, refused, type AppStore, type ChordApi, type Invoke, type Method, type Rec, type Value } from '../../examples/chord/src/types.ts'

/** The app store a node gives an object (key checks, dag-cbor values), over memory. */
function memoryStore (): AppStore {
  return createAppStore(new MemoryDatastore())
}

/** Every entry of a store, in key order. */
async function contents (store: AppStore): Promise<Array<[string, Value]>> {
  const out: Array<[string, Value]> = []
  for await (const entry of store.entries()) out.push(entry)
  return out
}

/** Calls a served wire as the layer would: args and results cross as plain data. */
function invokeOf (methods: Record<string, Method>): Invoke {
  return async (method, args) => {
    const fn = methods[method]
    if (fn == null) throw named('MethodNotFoundError', `no method ${method}`)
    const ctx = { peer: 'p', caller: { version: 0, class: 'chord-node' }, signal: new AbortController().signal }
    return structuredClone((await fn(structuredClone(args), ctx)) ?? null)
  }
}

/** A ChordApi over one RecordStore, answering as a node would (no ring). */
async function fakeNode (tombstones: boolean): Promise<ChordApi & { store: RecordStore }> {
  const store = new RecordStore(memoryStore(), tombstones ? codecV2 : codecV1)
  const refuse = (): never => { throw refused('no') }
  return {
    store,
    info: async () => ({ class: 'chord-node', chord: tombstones ? 2 : 1, peer: 'self', id: ringId('self'), pred: 'p', succs: ['s1', 's2'], preds: ['p'], fingers: ['f'], keys: store.size - store.tombstones, tombstones: store.tombstones, primary: 0, warm: true, r: tombstones ? 3 : 1 }),
    config: async () => ({ stabilizeMs: 1, fixFingersMs: 1, checkPredecessorMs: 1, rejoinMs: 1, rehomeMs: 1, syncMs: 1, warmMs: 1, successors: 4, replicas: 1, callMs: 1 }),
    ping: async () => {},
    state: async () => ({ pred: 'p', succs: ['s1', 's2'], preds: ['p', 'pp'] }),
    notify: async (peer) => peer === 'new',
    step: async (id) => id < '8' ? { done: true, node: 'n', next: ['m'], from: 'f' } : { done: false, node: 'closer' },
    lookup: async () => ({ node: 'n', succs: ['m'], from: 'f' }),
    get: async (key) => store.get(key) ?? null,
    peek: async (key) => store.get(key) ?? null,
    put: async (rec) => {
      if (rec.v === null && !tombstones) refuse()
      await store.merge(rec)
      const cur = store.get(rec.key)!
      return { t: cur.t, w: cur.w, copies: 1 }
    },
    take: async (recs) => { for (const r of recs) await store.merge(r); return [] },
    replicate: async (recs) => { if (!tombstones) refuse(); for (const r of recs) await store.merge(r) },
    digest: async (lo, hi, sfx, sums) => { if (!tombstones) refuse(); const m = store.digest(lo, hi, sfx); return [...Array(16).keys()].filter(c => m[c * 2] !== sums[c * 2] || m[c * 2 + 1] !== sums[c * 2 + 1]) },
    exchange: async (lo, hi, sfx, recs) => { if (!tombstones) refuse(); for (const r of recs) await store.merge(r); return [] },
    dump: async (after, limit) => store.page(after, limit)
  }
}

const rec = (key: string, t: number, w: string, v: Value | null): Rec => ({ key, t, w, v })

describe('Chord example: ring arithmetic', () => {
  it('ids are the first 8 bytes of SHA-256, as hex', () => {
    expect(ringId('12D3KooW')).toBe(createHash('sha256').update('12D3KooW').digest('hex').slice(0, 16))
    expect(ringId('é')).toBe(createHash('sha256').update('é').digest('hex').slice(0, 16))
  })
  it('intervals wrap around the circle', () => {
    expect(between('10', '20', '30')).toBe(true)
    expect(between('30', '40', '10')).toBe(true)
    expect(between('30', '05', '10')).toBe(true)
    expect(between('30', '20', '10')).toBe(false)
    expect(between('10', '10', '30')).toBe(false)
    expect(between('10', '20', '10')).toBe(true)
    expect(between('10', '10', '10')).toBe(false)
    expect(inRange('10', '30', '30')).toBe(true)
    expect(inRange('10', '10', '30')).toBe(false)
    expect(inRange('30', '10', '10')).toBe(true)
    expect(inRange('10', '10', '10')).toBe(true)
  })
  it('finger starts add powers of two modulo 2^64', () => {
    expect(fingerStart('0000000000000000', 0)).toBe('0000000000000001')
    expect(fingerStart('ffffffffffffffff', 0)).toBe('0000000000000000')
    expect(fingerStart('8000000000000000', 63)).toBe('0000000000000000')
  })
  it('user keys become store segments and back', () => {
    for (const key of ['plain', 'with/slash and space', 'ünïcödé', '']) expect(segmentToKey(keyToSegment(key))).toBe(key)
    expect(keyToSegment('a/b')).toMatch(/^[0-9a-f]+$/)
  })
})

describe('Chord example: last-writer-wins store', () => {
  it('a write replaces only an older stamp (t, then writer); equal stamps are the same write', async () => {
    const s = new RecordStore(memoryStore(), codecV2)
    expect(await s.merge(rec('k', 2, 'b', 'second'))).toBe(true)
    expect(await s.merge(rec('k', 1, 'z', 'older'))).toBe(false)
    expect(await s.merge(rec('k', 2, 'a', 'same t, smaller writer'))).toBe(false)
    expect(await s.merge(rec('k', 2, 'b', 'again'))).toBe(false)
    expect(await s.merge(rec('k', 2, 'c', null))).toBe(true)
    expect(s.get('k')).toEqual(rec('k', 2, 'c', null))
    expect(s.tombstones).toBe(1)
    expect(await s.merge(rec('k', 3, 'a', 'back'))).toBe(true)
    expect(s.tombstones).toBe(0)
  })
  it('forgets a handed-off record only if it is still the one handed off', async () => {
    const s = new RecordStore(memoryStore(), codecV1)
    await s.merge(rec('k', 1, 'w', 'v1'))
    const sent = s.get('k')!
    await s.merge(rec('k', 2, 'w', 'v2'))
    expect(await s.removeIf(sent)).toBe(false)
    expect(await s.removeIf(s.get('k')!)).toBe(true)
    expect(s.size).toBe(0)
  })
  it('rebuilds from its store after a restart', async () => {
    const backing = memoryStore()
    const a = new RecordStore(backing, codecV2)
    await a.merge(rec('x', 1, 'w', 'one'))
    await a.merge(rec('y', 2, 'w', null))
    const b = new RecordStore(backing, codecV2)
    await b.load()
    expect(b.get('x')).toEqual(rec('x', 1, 'w', 'one'))
    expect(b.get('y')).toEqual(rec('y', 2, 'w', null))
  })
  it('digests do not depend on the order records arrived in; buckets split by id suffix', async () => {
    const recs = Array.from({ length: 200 }, (_, i) => rec(`k${i}`, i, 'w', `v${i}`))
    const a = new RecordStore(memoryStore(), codecV2)
    const b = new RecordStore(memoryStore(), codecV2)
    for (const r of recs) await a.merge(r)
    for (const r of [...recs].reverse()) await b.merge(r)
    const lo = '0000000000000000'
    expect(a.digest(lo, lo)).toEqual(b.digest(lo, lo))
    await b.merge(rec('k7', 1000, 'w', 'newer'))
    const differ = [...Array(16).keys()].filter(c => a.digest(lo, lo)[c * 2] !== b.digest(lo, lo)[c * 2])
    expect(differ).toEqual([parseInt(ringId('k7').at(-1)!, 16)])
    const sub = ringId('k7').at(-1)!
    expect(a.range(lo, lo, sub).every(r => ringId(r.key).endsWith(sub))).toBe(true)
    expect(batches(recs, 500).every(batch => batch.length >= 1)).toBe(true)
    expect(batches(recs, 500).flat()).toEqual(recs)
  })
})

describe('Chord example: wires and SOs', () => {
  it('each version served and spoken round-trips the same answers', async () => {
    for (const [serve, speak, tombs] of [[serveV1, callV1, false], [serveV2, callV2, true], [serveV3, callV3, true]] as const) {
      const node = await fakeNode(tombs)
      const api = speak(invokeOf(serve(node)))
      expect(await api.put(rec('k', 5, 'w', 'v'))).toEqual({ t: 5, w: 'w', copies: 1 })
      expect(await api.get('k')).toEqual(rec('k', 5, 'w', 'v'))
      expect(await api.peek('missing')).toBeNull()
      expect(await api.state()).toEqual({ pred: 'p', succs: ['s1', 's2'], preds: ['p', 'pp'] })
      expect(await api.notify('new')).toBe(true)
      expect(await api.step('1000000000000000', [])).toEqual({ done: true, node: 'n', next: ['m'], from: 'f' })
      expect(await api.step('9000000000000000', ['x'])).toEqual({ done: false, node: 'closer' })
      expect(await api.lookup('1000000000000000', [])).toEqual({ node: 'n', succs: ['m'], from: 'f' })
      expect(await api.take([rec('h', 1, 'w', 'handed')])).toEqual([])
      expect(await api.dump(null, 10)).toEqual([rec('h', 1, 'w', 'handed'), rec('k', 5, 'w', 'v')])
      expect((await api.info()).class).toBe('chord-node')
      if (tombs) {
        expect(await api.put(rec('k', 6, 'w', null))).toEqual({ t: 6, w: 'w', copies: 1 })
        expect(await api.get('k')).toEqual(rec('k', 6, 'w', null))
        await api.replicate([rec('r', 1, 'w', 'copy')])
        expect(await api.peek('r')).toEqual(rec('r', 1, 'w', 'copy'))
      }
    }
  })

  it('v2 on a v1 node (future-SO): delete and replication are refused, values pass, tombstones in a hand-off are refused one by one', async () => {
    const v1 = await fakeNode(false)
    const so = callV2(invokeOf(serveV2(callV1(invokeOf(serveV1(v1))))))
    expect(await so.put(rec('k', 1, 'w', 'v'))).toMatchObject({ t: 1, w: 'w' })
    expect(await so.get('k')).toEqual(rec('k', 1, 'w', 'v'))
    await expect(so.put(rec('k', 2, 'w', null))).rejects.toMatchObject({ name: 'SimulationRefusedError' })
    expect(await so.get('k')).toEqual(rec('k', 1, 'w', 'v'))
    await expect(so.replicate([rec('x', 1, 'w', 'v')])).rejects.toMatchObject({ name: 'SimulationRefusedError' })
    await expect(so.digest('0000000000000000', '0000000000000000', '', new Array(32).fill(0))).rejects.toMatchObject({ name: 'SimulationRefusedError' })
    expect(await so.take([rec('a', 1, 'w', 'kept'), rec('b', 1, 'w', null)])).toEqual(['b'])
    expect(v1.store.get('a')).toEqual(rec('a', 1, 'w', 'kept'))
    expect(v1.store.get('b')).toBeUndefined()
  })

  it('v1 on a v2 node (past-SO): a tombstone is absence, an older v1 put loses to it', async () => {
    const v2 = await fakeNode(true)
    await v2.put(rec('gone', 10, 'w', null))
    const so = callV1(invokeOf(serveV1(callV2(invokeOf(serveV2(v2))))))
    expect(await so.get('gone')).toBeNull()
    expect(await so.put(rec('gone', 5, 'old', 'stale'))).toMatchObject({ t: 10, w: 'w' })
    expect(v2.store.get('gone')?.v).toBeNull()
    expect(await so.dump(null, 10)).toEqual([])
  })

  it('v1 on a v3 node: two past-SOs in a chain', async () => {
    const v3 = await fakeNode(true)
    await v3.put(rec('k', 1, 'w', 'three'))
    const pastV2 = serveV2(callV3(invokeOf(serveV3(v3))))
    const pastV1 = serveV1(callV2(invokeOf(pastV2)))
    const v1caller = callV1(invokeOf(pastV1))
    expect(await v1caller.get('k')).toEqual(rec('k', 1, 'w', 'three'))
    expect(await v1caller.state()).toEqual({ pred: 'p', succs: ['s1', 's2'], preds: ['p', 'pp'] })
    await v1caller.take([rec('h', 2, 'w', 'from v1')])
    expect(v3.store.get('h')).toEqual(rec('h', 2, 'w', 'from v1'))
  })

  it('malformed arguments fail the call, not the store', async () => {
    const node = await fakeNode(true)
    const methods = serveV2(node)
    const ctx = { peer: 'p', caller: { version: 1, class: 'c' }, signal: new AbortController().signal }
    await expect(Promise.resolve(methods.write!([{ k: 'x', s: ['no', 'w'], v: 1 }], ctx))).rejects.toMatchObject({ name: 'BadRequestError' })
    await expect(Promise.resolve(methods.write!([{ k: 'x', s: [1, 'w'], v: null }], ctx))).rejects.toMatchObject({ name: 'BadRequestError' })
    await expect(Promise.resolve(methods.hop!(['not-an-id', []], ctx))).rejects.toMatchObject({ name: 'BadRequestError' })
    expect(node.store.size).toBe(0)
  })
})

describe('Chord example: TFs', () => {
  it('v1 → v2 → v3 keeps every record and stamp, and the ring hint; a re-run writes the same state', async () => {
    const v1 = memoryStore()
    const s1 = new RecordStore(v1, codecV1)
    for (let i = 0; i < 20; i++) await s1.merge(rec(`key ${i}/x`, 100 + i, `writer-${i % 3}`, { n: i }))
    await v1.put('ring/hint', { pred: 'p', succs: ['a', 'b'] })
    const ctx = (old: AppStore, next: AppStore) => ({ old, next, futureState: memoryStore(), now: () => 1, random: () => 0.5, signal: new AbortController().signal })
    const v2 = memoryStore()
    await nodeV2.transform(ctx(v1, v2))
    const again = memoryStore()
    await nodeV2.transform(ctx(v1, again))
    expect(await contents(again)).toEqual(await contents(v2))
    expect(await nodeV2.invariants.records(v2)).toBe(true)
    expect(await nodeV2.invariants.noV1Records(v2)).toBe(true)
    const v3 = memoryStore()
    await nodeV3.transform(ctx(v2, v3))
    expect(await nodeV3.invariants.records(v3)).toBe(true)
    const s3 = new RecordStore(v3, codecV3)
    await s3.load()
    expect(s3.size).toBe(20)
    for (let i = 0; i < 20; i++) expect(s3.get(`key ${i}/x`)).toEqual(rec(`key ${i}/x`, 100 + i, `writer-${i % 3}`, { n: i }))
    expect(await v3.get('ring/hint')).toEqual({ pred: 'p', succs: ['a', 'b'] })
  })
})
