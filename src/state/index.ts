/**
 * The node's persistent store: one embedded LevelDB per data directory, split into namespaces
 * (libp2p's peer store and DHT records, manifests, bundles, per-version app state, SO state).
 *
 * @packageDocumentation
 */
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { MemoryDatastore, NamespaceDatastore } from 'datastore-core'
import { LevelDatastore } from 'datastore-level'
import { Key, type Datastore, type KeyQuery, type Pair, type Query } from 'interface-datastore'
import { fromString, toString } from 'uint8arrays'
import type { AbortOptions } from '@libp2p/interface'
import { StoreFormatError, StoreOpenError } from './errors.ts'

export * from './errors.ts'

const log = logger('molt:state')

/**
 * The data-directory format this molt writes. A store stamped with a higher number was written
 * by a newer molt and is refused rather than misread.
 */
export const STORE_FORMAT = 1

const FORMAT_KEY = new Key('/molt/format')

/**
 * A node's persistent store.
 */
export interface MoltStore {
  /** the whole store; prefer {@link MoltStore.namespace} */
  readonly datastore: Datastore

  /**
   * A view of the store under `/<name>`: keys written through it cannot collide with another
   * namespace's.
   */
  namespace(name: string): Datastore

  /** closes the store if this object opened it */
  close(): Promise<void>
}

/**
 * Where a store lives.
 */
export type StoreOptions =
  /** a LevelDB under this data directory (created when missing) */
  | { path: string }
  /** an existing datastore, e.g. one namespace of a store shared by an in-process testnet */
  | { datastore: Datastore }
  /** an in-memory store, gone at stop */
  | { memory: true }

const NAMESPACE = /^[a-zA-Z0-9._-]+(\/[a-zA-Z0-9._-]+)*$/

/**
 * A namespace whose queries the store below answers by prefix. datastore-core's
 * `NamespaceDatastore` drops a query's prefix and filters every key of the whole store below in
 * JavaScript: every query of one namespace (an app's state, libp2p's peer store, the DHT's
 * provider records) read the node's whole LevelDB, bundles included, and in an in-process
 * testnet, whose members share one store, every member's. Here the prefix goes down (LevelDB
 * seeks to it), so a query reads only its namespace's keys.
 */
class PrefixNamespace extends NamespaceDatastore {
  private readonly below: Datastore
  private readonly base: string

  constructor (below: Datastore, prefix: Key) {
    super(below, prefix)
    this.below = below
    this.base = prefix.toString()
  }

  /** the query's prefix as the store below sees it, or undefined when it matches no key */
  private prefixBelow (prefix: string | undefined): string | undefined {
    if (prefix == null || prefix === '/') return `${this.base}/`
    // every key starts with '/': a prefix that does not matches nothing
    return prefix.startsWith('/') ? this.base + prefix : undefined
  }

  private inner (key: Key): Key {
    return new Key(key.toString().slice(this.base.length), false)
  }

  override async * query (q: Query, options?: AbortOptions): AsyncGenerator<Pair> {
    const prefix = this.prefixBelow(q.prefix)
    if (prefix == null) return
    const query: Query = {
      ...q,
      prefix,
      filters: q.filters?.map(filter => ({ key, value }: Pair) => filter({ key: this.inner(key), value })),
      orders: q.orders?.map(order => (a: Pair, b: Pair) => order({ key: this.inner(a.key), value: a.value }, { key: this.inner(b.key), value: b.value }))
    }
    for await (const { key, value } of this.below.query(query, options)) yield { key: this.inner(key), value }
  }

  override async * queryKeys (q: KeyQuery, options?: AbortOptions): AsyncGenerator<Key> {
    const prefix = this.prefixBelow(q.prefix)
    if (prefix == null) return
    const query: KeyQuery = {
      ...q,
      prefix,
      filters: q.filters?.map(filter => (key: Key) => filter(this.inner(key))),
      orders: q.orders?.map(order => (a: Key, b: Key) => order(this.inner(a), this.inner(b)))
    }
    for await (const key of this.below.queryKeys(query, options)) yield this.inner(key)
  }
}

class Store implements MoltStore {
  readonly datastore: Datastore
  private readonly owned: LevelDatastore | undefined

  constructor (datastore: Datastore, owned: LevelDatastore | undefined) {
    this.datastore = datastore
    this.owned = owned
  }

  namespace (name: string): Datastore {
    if (!NAMESPACE.test(name)) {
      throw new TypeError(`invalid store namespace ${JSON.stringify(name)}`)
    }
    return new PrefixNamespace(this.datastore, new Key(`/${name}`))
  }

  async close (): Promise<void> {
    await this.owned?.close()
  }
}

/**
 * Opens (creating when missing) a node's store and checks its format stamp.
 */
export async function openStore (options: StoreOptions): Promise<MoltStore> {
  let datastore: Datastore
  let owned: LevelDatastore | undefined
  if ('path' in options) {
    const dir = join(options.path, 'store')
    try {
      await mkdir(dir, { recursive: true })
      owned = new LevelDatastore(dir)
      await owned.open()
    } catch (err) {
      throw new StoreOpenError(`cannot open the store in ${dir}: ${(err as Error).message}`, { cause: err })
    }
    datastore = owned
  } else if ('datastore' in options) {
    datastore = options.datastore
  } else {
    datastore = new MemoryDatastore()
  }

  try {
    await checkFormat(datastore)
  } catch (err) {
    await owned?.close()
    throw err
  }
  return new Store(datastore, owned)
}

async function checkFormat (datastore: Datastore): Promise<void> {
  if (!(await datastore.has(FORMAT_KEY))) {
    log('stamping a new store with format %d', STORE_FORMAT)
    await datastore.put(FORMAT_KEY, fromString(String(STORE_FORMAT)))
    return
  }
  const stamp = toString(await datastore.get(FORMAT_KEY))
  const format = Number(stamp)
  if (!Number.isSafeInteger(format) || format < 1) {
    throw new StoreFormatError(`the store's format stamp "${stamp.slice(0, 32)}" is not one molt writes`)
  }
  if (format > STORE_FORMAT) {
    throw new StoreFormatError(`the store has format ${format}, written by a newer molt; this molt reads format ${STORE_FORMAT}`)
  }
}
