/**
 * The node's store: namespaces on a real LevelDB, queried by prefix.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryDatastore } from 'datastore-core'
import { Key, type KeyQuery, type Query } from 'interface-datastore'
import { describe, it, expect, afterEach } from 'vitest'
import { openStore, type MoltStore } from '../../src/state/index.ts'
import type { AbortOptions } from '@libp2p/interface'

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (b: Uint8Array): string => new TextDecoder().decode(b)

/** A memory datastore that records the prefix of every query it is asked. */
class RecordingDatastore extends MemoryDatastore {
  readonly prefixes: Array<string | undefined> = []

  override query (q: Query, options?: AbortOptions): ReturnType<MemoryDatastore['query']> {
    this.prefixes.push(q.prefix)
    return super.query(q, options)
  }

  override queryKeys (q: KeyQuery, options?: AbortOptions): ReturnType<MemoryDatastore['queryKeys']> {
    this.prefixes.push(q.prefix)
    return super.queryKeys(q, options)
  }
}

async function all<T> (source: AsyncIterable<T> | Iterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of source) out.push(x)
  return out
}

describe('store namespaces', () => {
  const cleanup: Array<() => Promise<void>> = []
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c()
  })

  async function level (): Promise<MoltStore> {
    const dir = await mkdtemp(join(tmpdir(), 'molt-store-'))
    const store = await openStore({ path: dir })
    cleanup.push(async () => { await store.close(); await rm(dir, { recursive: true, force: true }) })
    return store
  }

  it('a namespace queries only its own keys, by prefix, with filters, orders and limits', async () => {
    const store = await level()
    // nested as an in-process testnet nests them: a member's store inside a shared one
    const member = await openStore({ datastore: store.namespace('members/m1') })
    const other = await openStore({ datastore: store.namespace('members/m10') })
    const ns = member.namespace('app')
    for (const k of ['kv/b', 'kv/a', 'kv/c', 'hint', 'kvx']) await ns.put(new Key(`/${k}`), bytes(`m1:${k}`))
    await other.namespace('app').put(new Key('/kv/a'), bytes('m10:kv/a'))
    await member.namespace('apps').put(new Key('/kv/z'), bytes('sibling'))

    const keys = async (q: Query): Promise<string[]> => (await all(ns.query(q))).map(p => p.key.toString())
    expect(await keys({})).toEqual(['/hint', '/kv/a', '/kv/b', '/kv/c', '/kvx'])
    expect(await keys({ prefix: '/' })).toHaveLength(5)
    expect(await keys({ prefix: '/kv/' })).toEqual(['/kv/a', '/kv/b', '/kv/c'])
    expect(await keys({ prefix: '/kv' })).toEqual(['/kv/a', '/kv/b', '/kv/c', '/kvx'])
    expect(await keys({ prefix: 'kv/' })).toEqual([])
    expect(await keys({ prefix: '/kv/', filters: [({ key }) => key.toString() !== '/kv/b'] })).toEqual(['/kv/a', '/kv/c'])
    expect(await keys({ prefix: '/kv/', orders: [(a, b) => b.key.toString() < a.key.toString() ? -1 : 1], limit: 2 })).toEqual(['/kv/c', '/kv/b'])
    expect((await all(ns.query({ prefix: '/kv/a' }))).map(p => text(p.value))).toEqual(['m1:kv/a'])
    expect((await all(ns.queryKeys({ prefix: '/kv/', filters: [(key) => key.toString().endsWith('c')] }))).map(k => k.toString())).toEqual(['/kv/c'])
    expect((await all(member.datastore.queryKeys({}))).map(k => k.toString()).sort()).toEqual(['/app/hint', '/app/kv/a', '/app/kv/b', '/app/kv/c', '/app/kvx', '/apps/kv/z', '/molt/format'])
  })

  it('hands the query\'s prefix to the store below instead of reading all of it', async () => {
    const below = new RecordingDatastore()
    const store = await openStore({ datastore: below })
    const ns = store.namespace('app/chord-node/1')
    await ns.put(new Key('/kv/a'), bytes('a'))
    await all(ns.query({ prefix: '/kv/' }))
    await all(ns.queryKeys({}))
    expect(below.prefixes).toEqual(['/app/chord-node/1/kv/', '/app/chord-node/1/'])
  })
})
