/**
 * App stores (decision 11): the {@link AppStore} an object, an SO or a TF sees, kept in a
 * namespace of the node's datastore. Values are dag-cbor encoded. The main thread owns the
 * datastore; app code in the worker reaches it through messages.
 *
 * Namespaces (names for `MoltStore.namespace`):
 * - `app/<class>/<version>`: the persistent state of the object of a class at a version;
 * - `so/past/<to>`: the state of the past-SO link that answers versions up to `<to>`;
 * - `so/future/<version>`: the state of the future-SO of a version (what its TF reads).
 */
import * as dagCbor from '@ipld/dag-cbor'
import { sha256 } from 'multiformats/hashes/sha2'
import { Key, type Datastore } from 'interface-datastore'
import { toString } from 'uint8arrays'
import { InvalidHostSpecError, InvalidStoreKeyError, ReadOnlyStoreError } from './errors.ts'
import type { AppStore, ReadonlyAppStore, Value } from './model.ts'

const KEY = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/
const PREFIX = /^([A-Za-z0-9._-]+\/)*[A-Za-z0-9._-]*$/
const CLASS = /^[A-Za-z0-9._-]{1,128}$/

/** Throws `InvalidStoreKeyError` unless `key` is `/`-separated segments of `[A-Za-z0-9._-]`. */
export function validateKey (key: unknown): string {
  if (typeof key !== 'string' || key.length > 1024 || !KEY.test(key)) {
    throw new InvalidStoreKeyError(`invalid store key ${JSON.stringify(key)}: use "/"-separated segments of [A-Za-z0-9._-]`)
  }
  return key
}

/** The datastore key of an app store key (checked). */
function storeKey (key: unknown): Key {
  return new Key(`/${validateKey(key)}`)
}

function validatePrefix (prefix: unknown): string {
  if (prefix == null) return ''
  if (typeof prefix !== 'string' || prefix.length > 1024 || !PREFIX.test(prefix)) {
    throw new InvalidStoreKeyError(`invalid store prefix ${JSON.stringify(prefix)}`)
  }
  return prefix
}

function validateVersion (version: number): number {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw new InvalidHostSpecError(`version: must be a non-negative safe integer (got ${String(version)})`)
  }
  return version
}

/** Throws `InvalidHostSpecError` unless `name` can name a class (and a store namespace). */
export function validateClass (name: unknown): string {
  if (typeof name !== 'string' || !CLASS.test(name)) {
    throw new InvalidHostSpecError(`class: ${JSON.stringify(name)} must be 1-128 characters of [A-Za-z0-9._-]`)
  }
  return name
}

/** The namespace of the object of `klass` at `version`: `app/<class>/<version>`. */
export function appNamespace (klass: string, version: number): string {
  return `app/${validateClass(klass)}/${validateVersion(version)}`
}

/** The namespace of the past-SO link answering versions up to `to`: `so/past/<to>`. */
export function pastSoNamespace (to: number): string {
  return `so/past/${validateVersion(to)}`
}

/** The namespace of the future-SO of `version`: `so/future/<version>`. */
export function futureSoNamespace (version: number): string {
  return `so/future/${validateVersion(version)}`
}

/** Encodes a value for a store; throws `InvalidStoreKeyError` on what dag-cbor refuses. */
export function encodeValue (value: unknown): Uint8Array {
  try {
    return dagCbor.encode(value)
  } catch (err) {
    throw new InvalidStoreKeyError(`the value is not a dag-cbor value: ${(err as Error).message}`)
  }
}

/** Decodes a stored value. */
export function decodeValue (bytes: Uint8Array): Value {
  return dagCbor.decode<Value>(bytes)
}

/**
 * An {@link AppStore} over a datastore (usually one namespace of the node's store). Keys map to
 * datastore keys `/<key>`; values are dag-cbor.
 */
export function createAppStore (datastore: Datastore, options: { readOnly?: boolean } = {}): AppStore {
  const readOnly = options.readOnly === true
  const refuse = (): never => { throw new ReadOnlyStoreError('this store is read only') }
  return {
    async get (key) {
      const k = storeKey(key)
      try {
        return decodeValue(await datastore.get(k))
      } catch (err) {
        if ((err as Error).name === 'NotFoundError') return undefined
        throw err
      }
    },
    async put (key, value) {
      if (readOnly) refuse()
      const k = storeKey(key)
      await datastore.put(k, encodeValue(value))
    },
    async delete (key) {
      if (readOnly) refuse()
      await datastore.delete(storeKey(key))
    },
    async * entries (prefix) {
      for (const [key, bytes] of await rawEntries(datastore, prefix)) {
        yield [key, decodeValue(bytes)]
      }
    }
  }
}

/**
 * Applies writes in one datastore batch: `{ key, value }` puts, `{ key }` (no `value`) deletes.
 * Every key and value is checked before anything is written, so a bad one changes nothing.
 */
export async function applyWrites (datastore: Datastore, writes: ReadonlyArray<{ key: string, value?: Value }>): Promise<void> {
  const batch = datastore.batch()
  for (const w of writes) {
    const k = storeKey(w.key)
    if ('value' in w) batch.put(k, encodeValue(w.value))
    else batch.delete(k)
  }
  await batch.commit()
}

/** A read-only view of a datastore as an app store. */
export function createReadonlyAppStore (datastore: Datastore): ReadonlyAppStore {
  const store = createAppStore(datastore, { readOnly: true })
  return { get: store.get.bind(store), entries: store.entries.bind(store) }
}

/** Every `[key, encoded value]` under `prefix`, in key order. */
export async function rawEntries (datastore: Datastore, prefix?: string): Promise<Array<[string, Uint8Array]>> {
  const p = validatePrefix(prefix)
  const out: Array<[string, Uint8Array]> = []
  for await (const { key, value } of datastore.query({ prefix: `/${p}` })) {
    const k = key.toString().slice(1)
    if (k.startsWith(p) && k !== '') {
      out.push([k, value])
    }
  }
  out.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
  return out
}

/** Removes every key of a datastore (a namespace view); returns how many. */
export async function clearStore (datastore: Datastore): Promise<number> {
  const keys: Key[] = []
  for await (const key of datastore.queryKeys({})) {
    keys.push(key)
  }
  // one batch: one write, and no half-emptied namespace if the node stops part-way
  const batch = datastore.batch()
  for (const key of keys) {
    batch.delete(key)
  }
  await batch.commit()
  return keys.length
}

/**
 * A digest of a store's whole content: sha256 of the dag-cbor list of `[key, value bytes]` in
 * key order, hex. Two stores with the same entries have the same digest; it is how a TF re-run
 * is checked to yield the same state (decision 8).
 */
export async function storeDigest (datastore: Datastore): Promise<string> {
  const entries = await rawEntries(datastore)
  const digest = await sha256.digest(dagCbor.encode(entries))
  return toString(digest.digest, 'base16')
}
