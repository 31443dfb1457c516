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
 * The bundle block store.
 */
export class BundleStore {
  private seq = 0

  readonly datastore: Datastore

  constructor (datastore: Datastore) {
    this.datastore = datastore
  }

  /** loads the highest arrival number */
  async open (): Promise<void> {
    for await (const [, record] of this.bundles()) {
      this.seq = Math.max(this.seq, record.seq)
    }
  }

  async hasBlock (cid: CID): Promise<boolean> {
    return await this.datastore.has(blockKey(cid))
  }

  async getBlock (cid: CID): Promise<Uint8Array | undefined> {
    try {
      return await this.datastore.get(blockKey(cid))
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') {
        return undefined
      }
      throw err
    }
  }

  async putBlock (cid: CID, bytes: Uint8Array): Promise<void> {
    await this.datastore.put(blockKey(cid), bytes)
  }

  async putBlocks (blocks: Array<{ cid: CID, bytes: Uint8Array }>): Promise<void> {
    const batch = this.datastore.batch()
    for (const b of blocks) {
      batch.put(blockKey(b.cid), b.bytes)
    }
    await batch.commit()
  }

  /** every stored block key's multihash, base32 */
  async * blockKeys (): AsyncGenerator<{ key: Key, size?: number }> {
    for await (const key of this.datastore.queryKeys({ prefix: '/blocks' })) {
      yield { key }
    }
  }

  async deleteKey (key: Key): Promise<void> {
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
