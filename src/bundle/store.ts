/**
 * Where a node keeps bundle blocks and its record of bundles, in one datastore namespace:
 *
 * - `/blocks/<base32 multihash>`: a block's bytes (keyed by multihash, so one content is stored once)
 * - `/bundles/<root cid>`: a bundle record (partial or complete, size, order of arrival)
 * - `/pins/<root cid>`: a pin
 */
import * as dagCbor from '@ipld/dag-cbor'
import { Key, type Datastore } from 'interface-datastore'
import { base32 } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'

/** What a node records of one bundle. */
export interface BundleRecord {
  /** `partial` once its root and file nodes are stored, `complete` once every block is */
  state: 'partial' | 'complete'
  /** the bundle's size: the sum of its distinct blocks' byte lengths */
  size: number
  /** order of arrival: higher is newer */
  seq: number
}

function blockKey (cid: CID): Key {
  return new Key(`/blocks/${base32.baseEncode(cid.multihash.bytes)}`)
}

function bundleKey (cid: CID): Key {
  return new Key(`/bundles/${cid.toString()}`)
}

function pinKey (cid: CID): Key {
  return new Key(`/pins/${cid.toString()}`)
}

/**
 * The bundle block store, with the most recently used blocks kept in memory up to a byte bound.
 * A release is fetched by a whole fleet at once, so its few blocks are read from a holder's
 * store hundreds of times in the first seconds; on a 50-node in-process ring one such read took
 * 200 ms and more on the loaded store while the publisher, the only holder, turned away 246
 * requests in a second as busy.
 */
export class BundleStore {
  private seq = 0
  /** store key → bytes, least recently used first */
  private readonly cache = new Map<string, Uint8Array>()
  private cachedBytes = 0

  readonly datastore: Datastore
  private readonly cacheBytes: number

  /** `cacheBytes`: the bound of the in-memory block cache (0: none) */
  constructor (datastore: Datastore, cacheBytes = 0) {
    this.datastore = datastore
    this.cacheBytes = cacheBytes
  }

  private remember (key: string, bytes: Uint8Array): void {
    if (bytes.byteLength > this.cacheBytes) return
    this.forget(key)
    // a view into a larger buffer (a block decoded out of a reply of several, a pooled read)
    // would keep all of that buffer alive beyond the bound: keep a copy of its own
    const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice()
    this.cache.set(key, own)
    this.cachedBytes += bytes.byteLength
    for (const [oldest, b] of this.cache) {
      if (this.cachedBytes <= this.cacheBytes) break
      this.cache.delete(oldest)
      this.cachedBytes -= b.byteLength
    }
  }

  private forget (key: string): void {
    const held = this.cache.get(key)
    if (held != null) {
      this.cache.delete(key)
      this.cachedBytes -= held.byteLength
    }
  }

  /** loads the highest arrival number */
  async open (): Promise<void> {
    for await (const [, record] of this.bundles()) {
      this.seq = Math.max(this.seq, record.seq)
    }
  }

  async hasBlock (cid: CID): Promise<boolean> {
    const key = blockKey(cid)
    return this.cache.has(key.toString()) || await this.datastore.has(key)
  }

  /** A block's bytes, shared with the cache: callers copy, never change them. */
  async getBlock (cid: CID): Promise<Uint8Array | undefined> {
    const key = blockKey(cid)
    const k = key.toString()
    const cached = this.cache.get(k)
    if (cached != null) {
      // most recently used: to the end
      this.remember(k, cached)
      return cached
    }
    try {
      const bytes = await this.datastore.get(key)
      this.remember(k, bytes)
      return bytes
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') {
        return undefined
      }
      throw err
    }
  }

  async putBlock (cid: CID, bytes: Uint8Array): Promise<void> {
    const key = blockKey(cid)
    await this.datastore.put(key, bytes)
    this.remember(key.toString(), bytes)
  }

  async putBlocks (blocks: Array<{ cid: CID, bytes: Uint8Array }>): Promise<void> {
    const batch = this.datastore.batch()
    for (const b of blocks) {
      batch.put(blockKey(b.cid), b.bytes)
    }
    await batch.commit()
    // fresh blocks are the ones peers ask for next
    for (const b of blocks) {
      this.remember(blockKey(b.cid).toString(), b.bytes)
    }
  }

  /** every stored block key's multihash, base32 */
  async * blockKeys (): AsyncGenerator<{ key: Key, size?: number }> {
    for await (const key of this.datastore.queryKeys({ prefix: '/blocks' })) {
      yield { key }
    }
  }

  async deleteKey (key: Key): Promise<void> {
    this.forget(key.toString())
    await this.datastore.delete(key)
  }

  /** the key a block is stored under */
  keyOf (cid: CID): string {
    return blockKey(cid).toString()
  }

  async getRecord (cid: CID): Promise<BundleRecord | undefined> {
    try {
      return dagCbor.decode<BundleRecord>(await this.datastore.get(bundleKey(cid)))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') {
        return undefined
      }
      throw err
    }
  }

  async putRecord (cid: CID, state: BundleRecord['state'], size: number): Promise<BundleRecord> {
    const existing = await this.getRecord(cid)
    const record: BundleRecord = { state, size, seq: existing?.seq ?? ++this.seq }
    await this.datastore.put(bundleKey(cid), dagCbor.encode(record))
    return record
  }

  async deleteRecord (cid: CID): Promise<void> {
    await this.datastore.delete(bundleKey(cid))
  }

  async * bundles (): AsyncGenerator<[CID, BundleRecord]> {
    for await (const { key, value } of this.datastore.query({ prefix: '/bundles' })) {
      yield [CID.parse(key.baseNamespace()), dagCbor.decode<BundleRecord>(value)]
    }
  }

  async pin (cid: CID): Promise<void> {
    await this.datastore.put(pinKey(cid), new Uint8Array(0))
  }

  async unpin (cid: CID): Promise<void> {
    await this.datastore.delete(pinKey(cid))
  }

  async pins (): Promise<CID[]> {
    const out: CID[] = []
    for await (const key of this.datastore.queryKeys({ prefix: '/pins' })) {
      out.push(CID.parse(key.baseNamespace()))
    }
    return out
  }
}
