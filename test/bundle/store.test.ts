/**
 * The bundle store's in-memory block cache, over a real datastore that counts its reads: fresh
 * and recently read blocks are answered from memory, the cache keeps to its byte bound (least
 * recently used out first), and a deleted block is gone from it too.
 */
import { randomBytes } from 'node:crypto'
import { MemoryDatastore } from 'datastore-core'
import { Key } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { describe, expect, it } from 'vitest'
import { BundleStore } from '../../src/bundle/store.ts'
import type { AbortOptions } from '@libp2p/interface'

class CountingDatastore extends MemoryDatastore {
  gets = 0
  override async get (key: Key, options?: AbortOptions): Promise<Uint8Array> {
    this.gets++
    return await super.get(key, options)
  }
}

async function block (size: number): Promise<{ cid: CID, bytes: Uint8Array }> {
  const bytes = new Uint8Array(randomBytes(size))
  return { cid: CID.createV1(raw.code, await sha256.digest(bytes)), bytes }
}

describe('bundle block cache', () => {
  it('answers fresh and recent blocks from memory, within its byte bound, and forgets deleted ones', async () => {
    const datastore = new CountingDatastore()
    const store = new BundleStore(datastore, 3000)
    const [a, b, c] = await Promise.all([block(1000), block(1000), block(1000)]) as [Awaited<ReturnType<typeof block>>, Awaited<ReturnType<typeof block>>, Awaited<ReturnType<typeof block>>]

    await store.putBlocks([a, b])
    expect(await store.getBlock(a.cid)).toEqual(a.bytes)
    expect(await store.getBlock(b.cid)).toEqual(b.bytes)
    expect(datastore.gets).toBe(0)

    // a was read last before c arrives, so b is the least recently used when the bound is hit
    expect(await store.getBlock(a.cid)).toEqual(a.bytes)
    await store.putBlock(c.cid, c.bytes)
    const d = await block(1000)
    await store.putBlocks([d])
    expect(await store.getBlock(a.cid)).toEqual(a.bytes)
    expect(datastore.gets).toBe(0)
    expect(await store.getBlock(b.cid)).toEqual(b.bytes)
    expect(datastore.gets).toBe(1)

    // deleted: gone from the datastore and from memory
    await store.deleteKey(new Key(store.keyOf(a.cid)))
    expect(await store.getBlock(a.cid)).toBeUndefined()
    expect(await store.hasBlock(a.cid)).toBe(false)

    // a block larger than the bound is never cached
    const big = await block(4000)
    await store.putBlocks([big])
    const before = datastore.gets
    expect(await store.getBlock(big.cid)).toEqual(big.bytes)
    expect(datastore.gets).toBe(before + 1)
  })

  it('keeps a copy of a block that is a view into a larger buffer, not the whole buffer', async () => {
    const store = new BundleStore(new CountingDatastore(), 3000)
    const a = await block(100)
    const reply = new Uint8Array(1_000_000)
    reply.set(a.bytes, 500)
    await store.putBlocks([{ cid: a.cid, bytes: reply.subarray(500, 600) }])
    const cached = await store.getBlock(a.cid)
    expect(cached).toEqual(a.bytes)
    expect(cached?.buffer.byteLength).toBe(100)
  })

  it('without a cache every read goes to the datastore', async () => {
    const datastore = new CountingDatastore()
    const store = new BundleStore(datastore)
    const a = await block(100)
    await store.putBlocks([a])
    await store.getBlock(a.cid)
    await store.getBlock(a.cid)
    expect(datastore.gets).toBe(2)
  })
})
