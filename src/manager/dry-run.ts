/**
 * The dry run of an upgrade (`molt try-upgrade`): what Substrate's try-runtime is to its
 * migrations. It takes a consistent snapshot of a node's app state, runs the upgrade's TF on it
 * twice (with the same fixed clock and seed) and its invariants once, and reports failures,
 * the digest, whether the two runs agree, and the time taken. The node's store is never written:
 * everything runs on an in-memory copy.
 *
 * - On a live store ({@link tryUpgrade} given the node's open `MoltStore`), the snapshot is one
 *   explicit LevelDB snapshot: the manager's record, the app namespace of the current version,
 *   the future-SO's namespace and the bundle are all read as of one instant, while the node keeps
 *   serving and writing.
 * - On a data directory no node runs on ({@link tryUpgradeOffline}), opening the LevelDB in
 *   place would rewrite files (a new log, `MANIFEST`, `CURRENT`, `LOG`), so the store's files are
 *   copied to a temporary directory, checked unchanged after the copy (a process that writes
 *   the store meanwhile makes the dry run fail `StoreBusyError`), and the copy is opened instead.
 *
 * @packageDocumentation
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import * as cbor from '@ipld/dag-cbor'
import { logger } from '@libp2p/logger'
import { LevelDatastore } from 'datastore-level'
import { Key } from 'interface-datastore'
import { base32 } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import { buildBundle, readBundleDir } from '../bundle/index.ts'
import { BundleNotFoundError } from '../bundle/errors.ts'
import { decodeFileNode, decodeRoot } from '../bundle/format.ts'
import { appNamespace, createHost, futureSoNamespace, storeDigest, type HostInit } from '../host/index.ts'
import { openStore, type MoltStore } from '../state/index.ts'
import type { Datastore } from 'interface-datastore'

const log = logger('molt:manager:dry-run')

/* ---------------------------------------------------------------- errors */

/** Base of the dry run's errors. */
export class DryRunError extends Error {
  static override readonly name: string = 'DryRunError'
  override readonly name: string = 'DryRunError'
}

/**
 * What to try cannot be determined: no store in the data directory, no app record and no
 * class or version given, a target version not above the current one, a bundle directory that
 * cannot be read.
 */
export class DryRunInputError extends DryRunError {
  static override readonly name = 'DryRunInputError'
  override readonly name = 'DryRunInputError'
}

/**
 * The store's files changed while they were copied: a process (a node without an admin socket,
 * an embedder) has the store open and writes it. Stop it, or ask it through its admin socket.
 */
export class StoreBusyError extends DryRunError {
  static override readonly name = 'StoreBusyError'
  override readonly name = 'StoreBusyError'
}

/* ---------------------------------------------------------------- types */

/**
 * The bundle whose TF and invariants are tried: a CID (read from the node's bundle store, or
 * from `bundles` when given), a directory, or its files by path.
 */
export type DryRunBundle =
  | CID
  | { dir: string }
  | { files: Map<string, Uint8Array> | Record<string, Uint8Array> }

/**
 * Options of {@link tryUpgrade}.
 */
export interface TryUpgradeOptions {
  /** the bundle of the new version (its `transform` and `invariants` exports are tried) */
  bundle: DryRunBundle

  /**
   * The class the node runs now.
   *
   * @default the current class in the node's upgrade record
   */
  class?: string

  /**
   * The class after the upgrade.
   *
   * @default the same as `class`
   */
  newClass?: string

  /**
   * The version whose state the TF reads (`app/<class>/<fromVersion>`).
   *
   * @default the current version in the node's upgrade record
   */
  fromVersion?: number

  /**
   * The version the TF produces; the future-SO's state is read from `so/future/<toVersion>`.
   *
   * @default fromVersion + 1
   */
  toVersion?: number

  /**
   * The TF's fixed clock, milliseconds since the epoch (the same for both runs).
   *
   * @default the time the dry run starts
   */
  now?: number

  /**
   * The seed of the TF's random source (the same for both runs).
   *
   * @default 0
   */
  seed?: number

  /**
   * Deadline of each TF run and of the invariant check, in milliseconds.
   *
   * @default 60000
   */
  transformMs?: number

  /**
   * Reads a bundle given by CID (e.g. the node's `BundleService`).
   *
   * @default read from the store's `bundles` namespace, in the same snapshot as the state
   */
  bundles?: { files(cid: CID): Promise<Map<string, Uint8Array>> }

  /**
   * Options of the host that runs the TF and the invariants (`transformMs` above wins).
   *
   * @default the host's defaults
   */
  host?: HostInit

  /** aborts the dry run (the TF's worker is ended) */
  signal?: AbortSignal
}

/**
 * What a dry run found. `ok` is true when both TF runs completed, their digests agree and every
 * invariant holds.
 */
export interface DryRunReport {
  ok: boolean
  /** `live` when read through a LevelDB snapshot of the open store, `copy` from a copy of a closed one, `store` from another datastore */
  snapshot: 'live' | 'copy' | 'store'
  class: string
  newClass: string
  fromVersion: number
  toVersion: number
  /** the bundle's CID (for a directory or files: the CID `pack` gives them without a `moltApi` option) */
  bundle: string
  /** the TF's clock and seed */
  now: number
  seed: number
  /** entries copied from the old version's namespace and from the future-SO's namespace */
  entries: { state: number, futureState: number }
  /** the digest of the state each completed TF run wrote (`storeDigest`), in run order */
  digests: string[]
  /** both runs completed and wrote the same state */
  agree: boolean
  /** the invariant check, when the first run completed */
  invariants?: { ok: boolean, failures: string[] }
  /** why not ok, one line each */
  failures: string[]
  /** the whole dry run, snapshot included, in milliseconds */
  ms: number
  /** where the time went, in milliseconds */
  timings: { snapshotMs: number, transformMs: number[], invariantsMs?: number }
}

/* ---------------------------------------------------------------- snapshots */

/** Reads of one consistent view of a store: full datastore keys (`/app/x/1/k`). */
interface StoreView {
  readonly kind: DryRunReport['snapshot']
  get(key: string): Promise<Uint8Array | undefined>
  /** every entry under the namespace `name` (keys relative to it, with a leading `/`) */
  entries(name: string): AsyncIterable<[string, Uint8Array]>
  close(): Promise<void>
}

interface LevelSnapshot { close(): Promise<void> }
interface LevelLike {
  supports?: { explicitSnapshots?: boolean }
  snapshot(): LevelSnapshot
  get(key: string, options: { snapshot: LevelSnapshot }): Promise<Uint8Array | undefined>
  iterator(options: { gte: string, lt: string, snapshot: LevelSnapshot }): AsyncIterable<[string, Uint8Array]> & { close(): Promise<void> }
}

function levelOf (datastore: Datastore): LevelLike | undefined {
  if (!(datastore instanceof LevelDatastore)) {
    return undefined
  }
  const db = datastore.db as unknown as Partial<LevelLike>
  if (typeof db.snapshot !== 'function' || db.supports?.explicitSnapshots !== true) {
    return undefined
  }
  return db as LevelLike
}

/** One explicit LevelDB snapshot: every read sees the store as of this instant. */
function levelView (db: LevelLike, kind: 'live' | 'copy'): StoreView {
  const snapshot = db.snapshot()
  return {
    kind,
    async get (key) {
      // classic-level 3 resolves undefined for a missing key
      const value = await db.get(key, { snapshot })
      return value ?? undefined
    },
    async * entries (name) {
      const prefix = `/${name}/`
      const it = db.iterator({ gte: prefix, lt: prefix + '\xFF', snapshot })
      try {
        for await (const [key, value] of it) {
          yield [key.slice(prefix.length - 1), value]
        }
      } finally {
        await it.close()
      }
    },
    async close () { await snapshot.close() }
  }
}

/** A store that is not a LevelDB (memory, a shared testnet's sub-level): read as it is. */
function plainView (store: MoltStore): StoreView {
  return {
    kind: 'store',
    async get (key) {
      try {
        return await store.datastore.get(new Key(key))
      } catch (err) {
        if ((err as Error).name === 'NotFoundError') return undefined
        throw err
      }
    },
    async * entries (name) {
      for await (const { key, value } of store.namespace(name).query({})) {
        yield [key.toString(), value]
      }
    },
    async close () {}
  }
}

function viewOf (store: MoltStore, kind: 'live' | 'copy'): StoreView {
  const db = levelOf(store.datastore)
  return db != null ? levelView(db, kind) : plainView(store)
}

/** Copies a namespace of the view into the same namespace of `target`; returns how many entries. */
async function copyNamespace (view: StoreView, name: string, target: MoltStore, signal?: AbortSignal): Promise<number> {
  const ns = target.namespace(name)
  let batch = ns.batch()
  let n = 0
  for await (const [key, value] of view.entries(name)) {
    signal?.throwIfAborted()
    batch.put(new Key(key), value)
    if (++n % 1000 === 0) {
      await batch.commit()
      batch = ns.batch()
    }
  }
  await batch.commit()
  return n
}

/* ---------------------------------------------------------------- inputs */

/** The current incarnation in the manager's persisted record (`manager/record`), if any. */
async function currentFromRecord (view: StoreView): Promise<{ class: string, version: number, stateVersion: number } | undefined> {
  const bytes = await view.get('/manager/record')
  if (bytes == null) {
    return undefined
  }
  let record: { lineage?: Array<{ class?: unknown, version?: unknown, stateVersion?: unknown }> }
  try {
    record = cbor.decode(bytes)
  } catch (err) {
    throw new DryRunInputError(`the node's upgrade record is unreadable: ${(err as Error).message}`)
  }
  const current = record.lineage?.at(-1)
  if (current == null || typeof current.class !== 'string' || typeof current.version !== 'number') {
    throw new DryRunInputError('the node\'s upgrade record names no current version')
  }
  // a version the node only advanced to keeps its state where it was
  return { class: current.class, version: current.version, stateVersion: typeof current.stateVersion === 'number' ? current.stateVersion : current.version }
}

/** A bundle's files read from the store's `bundles` namespace (see `src/bundle/store.ts`). */
async function bundleFromView (view: StoreView, cid: CID): Promise<Map<string, Uint8Array>> {
  const block = async (c: CID): Promise<Uint8Array> => {
    const bytes = await view.get(`/bundles/blocks/${base32.baseEncode(c.multihash.bytes)}`)
    if (bytes == null) {
      throw new BundleNotFoundError(`block ${c.toString()} of bundle ${cid.toString()} is missing`)
    }
    return bytes
  }
  const record = await view.get(`/bundles/bundles/${cid.toString()}`)
  if (record == null || cbor.decode<{ state?: string }>(record).state !== 'complete') {
    throw new BundleNotFoundError(`bundle ${cid.toString()} is not completely held by this node`)
  }
  const root = decodeRoot(cid, await block(cid))
  const files = new Map<string, Uint8Array>()
  for (const [path, entry] of Object.entries(root.files)) {
    const node = decodeFileNode(entry.cid, await block(entry.cid), entry.size)
    const bytes = new Uint8Array(node.size)
    let offset = 0
    for (const chunk of node.chunks) {
      bytes.set(await block(chunk.cid), offset)
      offset += chunk.size
    }
    files.set(path, bytes)
  }
  return files
}


function checkVersion (value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new DryRunInputError(`${what}: expected a non-negative integer (got ${String(value)})`)
  }
  return value
}

function oneLine (err: unknown): string {
  const e = err as Error
  return `${String(e?.name ?? 'Error')}: ${String(e?.message ?? err).replace(/\s*\n\s*/g, ' ')}`
}

/* ---------------------------------------------------------------- the dry run */

/**
 * Tries an upgrade on a snapshot of `store` and reports what it would do. The store is only
 * read: the state is copied (through one LevelDB snapshot when the store is a LevelDB) into an
 * in-memory store, and the TF runs there twice into two fresh namespaces with the same clock and
 * seed; the invariants run on the first run's output. A failing TF or invariant, or two runs
 * that disagree, is reported (`ok: false`), not thrown; bad inputs throw `DryRunInputError`,
 * a bundle the node does not hold `BundleNotFoundError`.
 *
 * @example
 * ```ts
 * const report = await tryUpgrade(node.store, { bundle: { dir: '/path/to/v2' } })
 * if (!report.ok) console.error(report.failures.join('\n'))
 * ```
 */
export async function tryUpgrade (store: MoltStore, options: TryUpgradeOptions): Promise<DryRunReport> {
  return await dryRun(store, options, 'live')
}

async function dryRun (store: MoltStore, options: TryUpgradeOptions, kind: 'live' | 'copy'): Promise<DryRunReport> {
  const started = performance.now()
  const signal = options.signal
  signal?.throwIfAborted()
  const now = options.now ?? Date.now()
  const seed = options.seed ?? 0
  const transformMs = options.transformMs ?? 60_000
  if (!Number.isFinite(now)) throw new DryRunInputError(`now: expected milliseconds since the epoch (got ${String(now)})`)
  if (!Number.isSafeInteger(seed)) throw new DryRunInputError(`seed: expected an integer (got ${String(seed)})`)

  // files first: a bad directory fails before anything is read from the store
  let files: Map<string, Uint8Array> | undefined
  const bundle = options.bundle
  const cid = CID.asCID(bundle)
  if (cid == null) {
    const given = bundle as { dir: string } | { files: Map<string, Uint8Array> | Record<string, Uint8Array> }
    if ('dir' in given) {
      files = await readBundleDir(given.dir)
    } else {
      files = given.files instanceof Map ? given.files : new Map(Object.entries(given.files))
    }
  }

  const mem = await openStore({ memory: true })
  let klass: string
  let fromVersion: number
  let toVersion: number
  let stateNs: string
  let entries: DryRunReport['entries']
  let snapshotKind: DryRunReport['snapshot']
  const view = viewOf(store, kind)
  try {
    snapshotKind = view.kind
    const current = options.class == null || options.fromVersion == null ? await currentFromRecord(view) : undefined
    const k = options.class ?? current?.class
    const v = options.fromVersion ?? current?.version
    if (k == null || v == null) {
      throw new DryRunInputError('this store has no upgrade record (the node never ran an app): give the class and the version to upgrade from')
    }
    klass = k
    fromVersion = checkVersion(v, 'fromVersion')
    toVersion = checkVersion(options.toVersion ?? fromVersion + 1, 'toVersion')
    if (toVersion <= fromVersion) {
      throw new DryRunInputError(`toVersion ${toVersion} is not above fromVersion ${fromVersion}`)
    }
    // validates the names before anything is copied
    appNamespace(options.newClass ?? klass, toVersion)
    stateNs = appNamespace(klass, options.fromVersion == null && current != null ? current.stateVersion : fromVersion)
    entries = {
      state: await copyNamespace(view, stateNs, mem, signal),
      futureState: await copyNamespace(view, futureSoNamespace(toVersion), mem, signal)
    }
    if (cid != null && options.bundles == null) {
      files = await bundleFromView(view, cid)
    }
  } catch (err) {
    await mem.close()
    throw err
  } finally {
    await view.close()
  }
  if (cid != null && options.bundles != null) {
    files = await options.bundles.files(cid)
  }
  const bundleCid = cid ?? (await buildBundle(files as Map<string, Uint8Array>)).root
  const snapshotMs = performance.now() - started
  const newClass = options.newClass ?? klass
  log('dry run of %s@%d → %s@%d with %s: %d + %d entries copied in %d ms', klass, fromVersion, newClass, toVersion, bundleCid, entries.state, entries.futureState, Math.round(snapshotMs))

  const host = createHost({ store: mem, self: { peerId: 'molt-dry-run' } }, { ...options.host, transformMs })
  const source = { files: files as Map<string, Uint8Array> }
  const failures: string[] = []
  const digests: string[] = []
  const runMs: number[] = []
  let invariants: DryRunReport['invariants']
  let invariantsMs: number | undefined
  try {
    const targets = [appNamespace(newClass, toVersion), 'dry-run/second']
    for (let run = 0; run < targets.length; run++) {
      const t0 = performance.now()
      try {
        await host.transform({
          bundle: source,
          from: stateNs,
          futureState: futureSoNamespace(toVersion),
          to: targets[run] as string,
          now,
          seed,
          ...(signal != null ? { signal } : {})
        })
        digests.push(await storeDigest(mem.namespace(targets[run] as string)))
      } catch (err) {
        signal?.throwIfAborted()
        failures.push(`TF run ${run + 1} failed: ${oneLine(err)}`)
        break
      } finally {
        runMs.push(performance.now() - t0)
      }
    }
    if (digests.length === 2 && digests[0] !== digests[1]) {
      failures.push(`the two TF runs disagree: digests ${digests[0] ?? ''} and ${digests[1] ?? ''} (the TF uses time or randomness it was not given, or state outside its inputs)`)
    }
    if (digests.length > 0) {
      const t0 = performance.now()
      invariants = await host.invariants(source, targets[0] as string, signal != null ? { signal } : {})
      invariantsMs = performance.now() - t0
      signal?.throwIfAborted()
      for (const f of invariants.failures) {
        failures.push(`invariant ${f}`)
      }
    }
  } finally {
    await host.stop()
    await mem.close()
  }
  const round = (ms: number): number => Math.round(ms * 10) / 10
  const agree = digests.length === 2 && digests[0] === digests[1]
  return {
    ok: failures.length === 0 && agree && invariants?.ok === true,
    snapshot: snapshotKind,
    class: klass,
    newClass,
    fromVersion,
    toVersion,
    bundle: bundleCid.toString(),
    now,
    seed,
    entries,
    digests,
    agree,
    ...(invariants != null ? { invariants } : {}),
    failures,
    ms: round(performance.now() - started),
    timings: { snapshotMs: round(snapshotMs), transformMs: runMs.map(round), ...(invariantsMs != null ? { invariantsMs: round(invariantsMs) } : {}) }
  }
}

/* ---------------------------------------------------------------- offline */

interface FileStamp { name: string, size: number, mtimeNs: bigint, ino: bigint }

async function stamps (dir: string): Promise<FileStamp[]> {
  const out: FileStamp[] = []
  for (const name of (await readdir(dir)).sort()) {
    const info = await stat(join(dir, name), { bigint: true })
    if (info.isFile()) {
      out.push({ name, size: Number(info.size), mtimeNs: info.mtimeNs, ino: info.ino })
    }
  }
  return out
}

function sameStamps (a: FileStamp[], b: FileStamp[]): boolean {
  return a.length === b.length && a.every((x, i) => {
    const y = b[i] as FileStamp
    return x.name === y.name && x.size === y.size && x.mtimeNs === y.mtimeNs && x.ino === y.ino
  })
}

/**
 * The dry run on the data directory of a node that is not running: the store's files
 * (`<dataDir>/store`) are copied to a temporary directory (the original is never opened, so it
 * stays byte-identical), checked unchanged after the copy, and the copy is opened and tried as
 * {@link tryUpgrade} does. Throws `DryRunInputError` when `dataDir` holds no store and
 * `StoreBusyError` when its files changed during the copy (a process has it open: ask that node
 * through its admin socket instead).
 */
export async function tryUpgradeOffline (dataDir: string, options: TryUpgradeOptions): Promise<DryRunReport> {
  const started = performance.now()
  const source = join(resolve(dataDir), 'store')
  const isDir = await stat(source).then(s => s.isDirectory(), () => false)
  if (!isDir || !(await stat(join(source, 'CURRENT')).then(s => s.isFile(), () => false))) {
    throw new DryRunInputError(`${dataDir} holds no molt store (no ${join('store', 'CURRENT')})`)
  }
  const tmp = await mkdtemp(join(tmpdir(), 'molt-dry-run-'))
  try {
    await mkdir(join(tmp, 'store'))
    const before = await stamps(source)
    for (const file of before) {
      options.signal?.throwIfAborted()
      // the lock is LevelDB's, not data: the copy makes its own
      if (file.name === 'LOCK') continue
      let bytes: Buffer
      try {
        bytes = await readFile(join(source, file.name))
      } catch (err) {
        throw new StoreBusyError(`${join(source, file.name)} went away during the copy (${(err as Error).message}): a process has the store open`)
      }
      if (bytes.byteLength !== file.size) {
        throw new StoreBusyError(`${join(source, file.name)} changed during the copy: a process has the store open`)
      }
      await writeFile(join(tmp, 'store', file.name), bytes, { flag: 'wx' })
    }
    if (!sameStamps(before, await stamps(source))) {
      throw new StoreBusyError(`the store in ${dataDir} changed while it was copied: a process has it open (stop it, or ask it through its admin socket)`)
    }
    const store = await openStore({ path: tmp })
    const copyMs = performance.now() - started
    try {
      const report = await dryRun(store, options, 'copy')
      // the copy is part of taking the snapshot
      report.ms = Math.round((performance.now() - started) * 10) / 10
      report.timings.snapshotMs = Math.round((report.timings.snapshotMs + copyMs) * 10) / 10
      return report
    } finally {
      await store.close()
    }
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}
