/**
 * The host (decision 7): one isolated worker thread per node runs the node's app code — the
 * current object, its past-SO chain and its future-SO chain — apart from molt itself. The main
 * thread keeps the store, the network and the watchdog; the worker reaches them by messages.
 *
 * - Calls run in a serial order at the worker (atomic sections, re-entrant for local delegation,
 *   released across outgoing calls: see `worker.ts`).
 * - A throw is reported for its call only ({@link AppError}); a call over its deadline fails
 *   {@link HostTimeoutError}; a worker that stops answering pings for `watchdogMs` (an endless
 *   loop) is ended and restarted with the same spec, as is one that crashes or exceeds its memory
 *   cap (`memoryMb`). Objects recover from their stores, as after any soft restart.
 * - `load` ends the old worker before starting the new one: the old version's code, objects and
 *   timers are gone with it.
 * - TFs and invariant checks run in their own short-lived workers, under a deadline. A forward
 *   TF's worker, once the TF succeeded, goes on to serve the version it transformed to (the next
 *   `load` of that bundle takes it); `prepare` starts that worker ahead of time, with the bundle
 *   imported, so that neither a thread start nor an import falls in the node's time out of
 *   service.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, rm, stat, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { logger } from '@libp2p/logger'
import { TypedEventEmitter } from 'main-event'
import { CID } from 'multiformats/cid'
import { validatePath } from '../bundle/format.ts'
import {
  AppApiMismatchError, AppError, AppLoadError, HostNotLoadedError, HostTimeoutError, InvalidHostSpecError,
  InvalidStoreKeyError, MethodNotFoundError, QuiesceTimeoutError, ReadOnlyStoreError, TargetNotLoadedError,
  TransformFailedError, TransformTimeoutError, WorkerCrashedError, WorkerFailedError
} from './errors.ts'
import { MOLT_APP_API, type HealthReport, type Value } from './model.ts'
import { appNamespace, applyWrites, clearStore, createAppStore, createReadonlyAppStore, futureSoNamespace, pastSoNamespace, validateClass } from './store.ts'
import type { FromWorker, HealthAnswer, JobData, ServeData, StandbyData, ToWorker, WireError, WorkerData } from './protocol.ts'
import type { ReadonlyAppStore } from './model.ts'
import type { AbortOptions } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'

const log = logger('molt:host')
const appLog = logger('molt:app')


// ---------------------------------------------------------------------------------------------
// public types

/**
 * Where a version's code comes from: a bundle held by the node's bundle service (by CID), its
 * files, or a directory. `entry` is the module whose exports molt calls.
 */
export type BundleSource =
  | CID
  | {
    /** the bundle's files by relative path */
    files: Map<string, Uint8Array> | Record<string, Uint8Array>
    /**
     * The entry module's path.
     *
     * @default 'index.js'
     */
    entry?: string
  }
  | {
    /** a directory holding the bundle's files */
    dir: string
    /**
     * The entry module's path, relative to `dir`.
     *
     * @default 'index.js'
     */
    entry?: string
  }

/** The current object: the `create` export of its class's bundle. */
export interface CurrentSpec {
  /** the node's class */
  class: string
  /** the system version it implements */
  version: number
  /** its bundle */
  bundle: BundleSource
  /**
   * The version whose namespace (`app/<class>/<stateVersion>`) holds the object's state, when it
   * is not `version`: the node only advanced to `version` and runs the same code on the same
   * state.
   *
   * @default version
   */
  stateVersion?: number
}

/**
 * A past-SO link: the `pastSO` export of `bundle` (the bundle of version `to + 1`) implements
 * every version from `from` to `to` by calling the next-newer link (or the current object).
 */
export interface PastLinkSpec {
  from: number
  to: number
  bundle: BundleSource
  /**
   * The class the node ran at version `to`: the past-SO reads that version's state (read only,
   * `app/<class>/<to>`) to initialise its own (HotOS'03 §7.2).
   *
   * @default the current class
   */
  class?: string
  /**
   * The version whose namespace holds that state, when it is not `to` (the node had only
   * advanced to `to`).
   *
   * @default to
   */
  stateVersion?: number
}

/**
 * A future-SO link: the `futureSO` export of `bundle` (the bundle of `version`) implements
 * `version` by calling the next-older link (or the current object).
 */
export interface FutureLinkSpec {
  version: number
  bundle: BundleSource
}

/**
 * What the host runs. Past links newest first and contiguous down from `current.version - 1`;
 * future links oldest first above `current.version` (they may skip versions).
 */
export interface HostSpec {
  current: CurrentSpec
  /** @default [] */
  past?: PastLinkSpec[]
  /** @default [] */
  future?: FutureLinkSpec[]
}

/** Options of an outgoing call, as the host hands it to `components.call`. */
export interface HostCallOptions {
  /** the whole call's deadline in milliseconds, when the app gave one */
  deadlineMs?: number
  /** peers to try next on a retryable failure */
  alternatives?: string[]
  /** which of the callee's objects */
  object?: string
  /** the version label: the version of the object (or SO) that made the call */
  version: number
  /** the class label: the node's class */
  class: string
  /** aborts when the worker that made the call ends */
  signal: AbortSignal
}

/**
 * What the host needs of its node.
 */
export interface HostComponents {
  /** the node's store (a `MoltStore`): app and SO state live in its namespaces */
  store: { namespace(name: string): Datastore }
  /** this node */
  self: { peerId: string }
  /**
   * Makes an outgoing versioned call (the node wires it to the upgrade layer). Without it,
   * `host.call` fails `UnavailableError`.
   */
  call?(peer: string, method: string, args: Value[], options: HostCallOptions): Promise<unknown>
  /**
   * The peers the node is connected to, as the app's `host.peers()` shows them.
   *
   * @default () => []
   */
  peers?(): string[]
  /** the bundle service, to load versions given by CID */
  bundles?: { files(cid: CID): Promise<Map<string, Uint8Array>> }
}

/**
 * Options of the host. Every deadline is in milliseconds.
 */
export interface HostInit {
  /**
   * Where bundles are written before their modules are imported. A directory given here is kept
   * at `stop()` and reused on the next start (a bundle already written there is not written again).
   *
   * @default a fresh directory under the OS's temporary directory, removed at `stop()`; a node
   * with a data directory uses `<dataDir>/host`, so a crash leaves nothing behind in the
   * temporary directory
   */
  dir?: string
  /**
   * The longest one call may run at the worker; past it the call fails `HostTimeoutError` and
   * its atomic section is released.
   *
   * @default 10000
   */
  callTimeoutMs?: number
  /**
   * A worker that answers no ping for this long is ended and restarted (an endless loop).
   *
   * @default 5000
   */
  watchdogMs?: number
  /**
   * How often the worker is pinged.
   *
   * @default 1000
   */
  heartbeatMs?: number
  /**
   * Deadline for a version's modules to import and its objects to be created. Generous: a
   * worker thread starting on a small or crowded machine takes seconds before the app's own
   * code runs, and a version that misses it is rolled back.
   *
   * @default 30000
   */
  startTimeoutMs?: number
  /**
   * The worker's heap cap (`resourceLimits.maxOldGenerationSizeMb`); a worker beyond it is ended
   * and restarted.
   *
   * @default 128
   */
  memoryMb?: number
  /**
   * Consecutive failed restarts after which the host gives up (`WorkerFailedError`) until the
   * next `load`.
   *
   * @default 3
   */
  maxRestarts?: number
  /**
   * Deadline of `quiesce` when no signal is given.
   *
   * @default 5000
   */
  quiesceMs?: number
  /**
   * How long the objects' `stop()` may take before the worker is ended regardless.
   *
   * @default 1000
   */
  stopMs?: number
  /**
   * Deadline of a TF or an invariant check.
   *
   * @default 60000
   */
  transformMs?: number
  /**
   * How often the peer list the app sees is refreshed.
   *
   * @default 1000
   */
  peersRefreshMs?: number
}

/**
 * One call to run, as the upgrade layer's `invoke` callback receives it (structurally its
 * `InvokeRequest`).
 */
export interface HostInvokeRequest {
  /** the object that executes it */
  target: { kind: 'current' | 'past' | 'future', version: number }
  /** a named object: refused, this host runs one object per node */
  object?: string
  method: string
  args: readonly unknown[]
  /** the calling peer (a `PeerId` or its string) */
  peer: { toString(): string } | string
  caller: { version: number, class: string }
  /** aborts the call (the layer's deadline) */
  signal?: AbortSignal
}

/** A TF run. Namespaces are names for `components.store.namespace`. */
export interface TransformRequest extends AbortOptions {
  /** the bundle whose `transform` (or `reverseTransform`) runs */
  bundle: BundleSource
  /**
   * Run `reverseTransform` instead.
   *
   * @default false
   */
  reverse?: boolean
  /** the old version's state, read only */
  from: string
  /** the future-SO's persisted state, read only */
  futureState: string
  /** the fresh namespace the TF writes; emptied first, so a re-run starts clean */
  to: string
  /** the upgrade's fixed clock, milliseconds since the epoch */
  now: number
  /** the seed of the upgrade's random source */
  seed: number
  /**
   * Deadline of this run.
   *
   * @default the host's `transformMs`
   */
  deadlineMs?: number
  /**
   * After the TF, check the bundle's `invariants` on the state it wrote, in the same worker: the
   * same report as `invariants(bundle, to)`, without starting a second worker and importing the
   * bundle again while the node is out of service.
   *
   * @default false
   */
  invariants?: boolean
}

/**
 * What a TF run produced besides the state it wrote. The state's digest is not part of it: a
 * caller that compares runs (the dry run) takes `storeDigest` of the namespace itself, so that a
 * live upgrade does not read its whole new state once more while the node is out of service.
 */
export interface TransformResult {
  /** the invariants' report on the written state, when the request asked for it */
  invariants?: CheckReport
}

/** The outcome of a health or invariant check. */
export interface CheckReport {
  ok: boolean
  /** why not, one line per failing object or invariant */
  failures: string[]
}

/** What the host runs now. */
export interface HostStatus {
  /** `idle`: nothing loaded; `failed`: gave up restarting */
  state: 'idle' | 'starting' | 'running' | 'failed'
  /** how many workers were started so far */
  generation: number
  /** the serving worker's thread id */
  threadId?: number
  /** the thread id of the prepared worker ({@link AppHost.prepare}), while one waits */
  prepared?: number
  class?: string
  version?: number
  /** past-SO links as `[from, to]` */
  past: Array<[number, number]>
  future: number[]
  quiesced: boolean
}

/** Events of the host. */
export interface HostEvents {
  /** a serving worker is ready */
  'worker:started': CustomEvent<{ generation: number, threadId: number, version: number }>
  /** a worker crashed, hung or ran out of memory; it is being restarted */
  'worker:restarting': CustomEvent<{ reason: string, error: Error }>
  /** restarting failed `maxRestarts` times: nothing serves until the next `load` */
  'worker:failed': CustomEvent<{ error: Error }>
  /** a line the app logged */
  'app:log': CustomEvent<{ version: number, message: string, args: Value[] }>
}

/**
 * Runs a node's app code in an isolated worker.
 */
export interface AppHost {
  /** crashes, restarts, app logs */
  readonly events: TypedEventEmitter<HostEvents>

  /**
   * Ends whatever runs now and starts `spec` in a fresh worker. Rejects `AppLoadError` (or
   * `AppApiMismatchError`) when the version cannot start: then nothing runs, and the caller may
   * load the previous spec again.
   */
  load(spec: HostSpec, options?: AbortOptions): Promise<void>

  /** Adds the next future-SO link to the running worker, without restarting it. */
  installFuture(link: FutureLinkSpec, options?: AbortOptions): Promise<void>

  /**
   * Runs one call (the layer's `invoke`; a bound function). Resolves with the method's value
   * (`undefined` as `null`); rejects {@link AppError} when the app threw, or a host error.
   */
  readonly invoke: (request: HostInvokeRequest) => Promise<Value>

  /**
   * Brings the running version to an update point (decision 9): host timers stop, every
   * object's `quiesce` runs, in-flight calls drain. Rejects `QuiesceTimeoutError` past the
   * deadline (signal, else `quiesceMs`).
   */
  quiesce(options?: AbortOptions): Promise<void>

  /** After a postponed upgrade: restarts the running spec so its objects re-arm their timers. */
  resume(options?: AbortOptions): Promise<void>

  /** The health checks of every running object. */
  health(options?: AbortOptions): Promise<CheckReport>

  /**
   * Writes a bundle's files where workers can import them and returns the URL of its entry
   * module, for code that runs a bundle's export in a worker of its own (a custom scheduling
   * function). Nothing is loaded here.
   */
  moduleUrl(bundle: BundleSource, options?: AbortOptions): Promise<string>

  /** Calls an observer of the current object (read only, for scheduling functions). */
  observe(name: string, args?: Value[], options?: AbortOptions): Promise<Value>

  /** A read-only view of the current object's state, read from the main thread. */
  state(): ReadonlyAppStore

  /**
   * Starts the worker the next version will run in, and imports `bundle` in it, while the
   * current version still serves: the next `transform` of that bundle runs in it, and once the TF
   * succeeded the next `load` whose current object comes from that bundle serves in it. One
   * prepared worker at most: preparing another bundle ends the previous one; a `load` of any other
   * bundle ends it, as does `stop`. Rejects `AppLoadError` (or `AppApiMismatchError`) when the
   * bundle cannot be imported; then nothing is prepared.
   */
  prepare(bundle: BundleSource, options?: AbortOptions): Promise<void>

  /**
   * Runs a TF on a freshly emptied `to` namespace, in the prepared worker when it holds this
   * bundle, else in a new one. After a forward TF succeeds, its worker is kept to serve the
   * version it transformed to: module-level state the TF leaves behind is seen by that version's
   * objects.
   */
  transform(request: TransformRequest): Promise<TransformResult>

  /** Runs the `invariants` export of `bundle` on the state in `namespace`. */
  invariants(bundle: BundleSource, namespace: string, options?: AbortOptions): Promise<CheckReport>

  /** What runs now. */
  status(): HostStatus

  /**
   * Ends the serving worker (objects' `stop()` first, bounded by `stopMs`); a prepared worker
   * stays for the next `transform` and `load`.
   */
  unload(): Promise<void>

  /** Ends every worker, prepared ones too (objects' `stop()` first, bounded by `stopMs`); `load` may start another. */
  stop(): Promise<void>
}

// ---------------------------------------------------------------------------------------------
// worker start-up

const HERE = import.meta.url
const WORKER_URL = new URL(HERE.endsWith('.ts') ? './worker.ts' : './worker.js', HERE)

let execArgv: string[] | undefined
/**
 * The `execArgv` a worker whose module is at `url` needs: built, nothing; under tsx or vitest the
 * worker is TypeScript, which a Node.js that strips types (≥ 22.18) loads by itself, with no
 * flags (tsx's loader costs each worker a loader thread and about a third more CPU to start,
 * and upgrades start several workers per node); an older one needs tsx's loader.
 */
export function workerExecArgv (url: URL = WORKER_URL): string[] | undefined {
  if (!url.pathname.endsWith('.ts')) return undefined
  if (process.features.typescript != null && process.features.typescript !== false) return []
  if (execArgv == null) {
    const has = process.execArgv.some(a => a.includes('tsx'))
    execArgv = has ? [...process.execArgv] : [...process.execArgv, '--import', pathToFileURL(createRequire(HERE).resolve('tsx')).href]
  }
  return execArgv
}

const HOST_ERRORS: Record<string, new (message: string) => Error> = {
  AppLoadError,
  AppApiMismatchError,
  TargetNotLoadedError,
  MethodNotFoundError,
  HostTimeoutError,
  ReadOnlyStoreError,
  InvalidStoreKeyError,
  TransformFailedError,
  TransformTimeoutError
}

function fromWire (error: WireError): Error {
  if (error.app === true) return new AppError(error.name, error.message)
  const C = HOST_ERRORS[error.name]
  return C != null ? new C(error.message) : new AppError(error.name, error.message)
}

function wire (err: unknown): WireError {
  const e = err as Error
  return { name: String(e?.name ?? 'Error'), message: String(e?.message ?? err) }
}

function positive (value: number | undefined, fallback: number, name: string): number {
  const v = value ?? fallback
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InvalidHostSpecError(`${name}: must be a positive number (got ${String(value)})`)
  }
  return v
}

/** A promise that rejects when the signal aborts. */
function raceSignal<T> (promise: Promise<T>, signal: AbortSignal | undefined, onAbort: () => Error): Promise<T> {
  if (signal == null) return promise
  if (signal.aborted) {
    // the abandoned promise may still reject (its worker ending): that is no one's error
    promise.catch(() => {})
    return Promise.reject(onAbort())
  }
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => { reject(onAbort()) }
    signal.addEventListener('abort', abort, { once: true })
    promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', abort) })
  })
}

interface StoreBinding {
  datastore: Datastore
  readOnly: boolean
}

interface Pending {
  resolve(value: unknown): void
  reject(err: Error): void
}

/** Starts a worker thread on `data`, capped at `memoryMb` of heap. */
function spawnWorker (data: WorkerData, memoryMb: number): Worker {
  const argv = workerExecArgv()
  return new Worker(WORKER_URL, {
    workerData: data,
    resourceLimits: { maxOldGenerationSizeMb: memoryMb, maxYoungGenerationSizeMb: Math.max(4, Math.min(32, Math.floor(memoryMb / 4))) },
    ...(argv != null ? { execArgv: argv } : {}),
    stdout: false,
    stderr: false
  })
}

/**
 * A worker with a bundle imported and no task, between runs: a prepared worker, or a TF's worker
 * kept to serve. Listens for its own end (an unheard `error` would throw in the main thread).
 */
class ParkedWorker {
  gone = false
  private readonly onGone = (): void => { this.gone = true }

  private readonly worker: Worker

  constructor (worker: Worker) {
    this.worker = worker
    worker.on('error', this.onGone)
    worker.on('exit', this.onGone)
  }

  get threadId (): number {
    return this.worker.threadId
  }

  /** The thread, for a new run; `undefined` when it ended meanwhile. */
  take (): Worker | undefined {
    this.worker.off('error', this.onGone)
    this.worker.off('exit', this.onGone)
    return this.gone ? undefined : this.worker
  }

  end (): void {
    this.gone = true
    void this.worker.terminate().catch(() => {})
  }
}

/** The prepared worker, or the one being prepared, by the URL of the bundle it imported. */
interface Standby {
  url: string
  /** `undefined` when it failed to start */
  ready: Promise<ParkedWorker | undefined>
  parked?: ParkedWorker
}

/**
 * One worker thread's task (serving a spec, a job, or waiting prepared) and the requests in
 * flight to it.
 */
class WorkerRun {
  readonly pending = new Map<number, Pending>()
  /** aborts the outgoing calls the worker made when it ends */
  readonly lifetime = new AbortController()
  readonly started: Promise<void>
  private nextId = 0
  ended = false
  pingSentAt: number | undefined
  inflight = 0
  private drained: PromiseWithResolvers<void> | undefined
  private startedResolvers = Promise.withResolvers<void>()

  readonly worker: Worker
  private readonly memoryMb: number
  readonly stores: Map<string, StoreBinding>
  private readonly components: HostComponents
  private readonly klass: string
  private readonly onEnd: (run: WorkerRun, error: Error) => void
  private readonly onLog: (version: number, message: string, args: Value[]) => void

  constructor (
    worker: Worker,
    memoryMb: number,
    stores: Map<string, StoreBinding>,
    components: HostComponents,
    klass: string,
    onEnd: (run: WorkerRun, error: Error) => void,
    onLog: (version: number, message: string, args: Value[]) => void
  ) {
    this.worker = worker
    this.memoryMb = memoryMb
    this.stores = stores
    this.components = components
    this.klass = klass
    this.onEnd = onEnd
    this.onLog = onLog
    this.started = this.startedResolvers.promise
    this.started.catch(() => {})
    worker.on('message', this.onMessage)
    worker.on('error', this.onError)
    worker.on('exit', this.onExit)
  }

  private readonly onError = (err: Error): void => {
    const error = (err as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY'
      ? new WorkerCrashedError(`the worker exceeded its memory cap of ${this.memoryMb} MB`)
      : new WorkerCrashedError(`the worker crashed: ${err.message}`)
    this.end(error)
  }

  private readonly onExit = (code: number): void => {
    this.end(new WorkerCrashedError(`the worker exited with code ${code}`))
  }

  /**
   * Hands the thread on (to a {@link ParkedWorker}, then another run) without ending it. Only
   * once nothing is in flight: what was pending fails as if the worker had ended.
   */
  release (): Worker {
    this.worker.off('message', this.onMessage)
    this.worker.off('error', this.onError)
    this.worker.off('exit', this.onExit)
    if (!this.ended) {
      this.ended = true
      const error = new WorkerCrashedError('the worker was handed on')
      this.startedResolvers.reject(error)
      this.lifetime.abort(error)
      for (const p of this.pending.values()) p.reject(error)
      this.pending.clear()
      this.drained?.resolve()
    }
    return this.worker
  }

  get threadId (): number {
    return this.worker.threadId
  }

  /** Fails everything in flight and ends the thread. Idempotent. */
  end (error: Error): void {
    if (this.ended) return
    this.ended = true
    this.startedResolvers.reject(error)
    this.lifetime.abort(error)
    for (const p of this.pending.values()) {
      p.reject(error)
    }
    this.pending.clear()
    this.drained?.resolve()
    void this.worker.terminate().catch(() => {})
    this.onEnd(this, error)
  }

  post (message: ToWorker): void {
    if (!this.ended) {
      this.worker.postMessage(message)
    }
  }

  /** Sends a request and waits for its `res`. */
  request (make: (id: number) => ToWorker, signal?: AbortSignal, onAbort?: (id: number) => Error): Promise<unknown> {
    if (this.ended) return Promise.reject(new WorkerCrashedError('the worker has ended'))
    const id = ++this.nextId
    return new Promise((resolve, reject) => {
      let cleanup: (() => void) | undefined
      if (signal != null && onAbort != null) {
        const abort = (): void => {
          this.pending.delete(id)
          reject(onAbort(id))
        }
        if (signal.aborted) {
          reject(onAbort(id))
          return
        }
        signal.addEventListener('abort', abort, { once: true })
        cleanup = () => { signal.removeEventListener('abort', abort) }
      }
      this.pending.set(id, {
        resolve: (v) => { cleanup?.(); resolve(v) },
        reject: (e) => { cleanup?.(); reject(e) }
      })
      try {
        this.worker.postMessage(make(id))
      } catch (err) {
        // e.g. an argument that cannot be cloned
        this.pending.delete(id)
        cleanup?.()
        reject(new InvalidStoreKeyError(`the request cannot cross to the worker: ${(err as Error).message}`))
      }
    })
  }

  /** Resolves once no call is in flight. */
  async idle (): Promise<void> {
    while (this.inflight > 0 && !this.ended) {
      this.drained ??= Promise.withResolvers<void>()
      await this.drained.promise
    }
  }

  callDone (): void {
    this.inflight--
    if (this.inflight === 0 && this.drained != null) {
      const d = this.drained
      this.drained = undefined
      d.resolve()
    }
  }

  private readonly onMessage = (msg: FromWorker): void => {
    switch (msg.t) {
      case 'ready':
        this.startedResolvers.resolve()
        return
      case 'fatal':
        this.startedResolvers.reject(fromWire(msg.error))
        return
      case 'res': {
        const p = this.pending.get(msg.id)
        if (p != null) {
          this.pending.delete(msg.id)
          if (msg.ok) p.resolve(msg.value)
          else p.reject(fromWire(msg.error))
        }
        return
      }
      case 'pong':
        this.pingSentAt = undefined
        return
      case 'log':
        this.onLog(msg.version, msg.message, msg.args)
        return
      case 'call':
        this.reply(msg.id, this.outgoing(msg))
        return
      case 'store':
        this.reply(msg.id, this.storeOp(msg))
    }
  }

  private reply (id: number, work: Promise<unknown>): void {
    work.then(
      (value) => {
        try {
          this.post({ t: 'reply', id, ok: true, value })
        } catch (err) {
          this.post({ t: 'reply', id, ok: false, error: wire(new InvalidStoreKeyError(`the value cannot cross to the worker: ${(err as Error).message}`)) })
        }
      },
      (err) => { this.post({ t: 'reply', id, ok: false, error: wire(err) }) }
    )
  }

  private async outgoing (msg: Extract<FromWorker, { t: 'call' }>): Promise<unknown> {
    const call = this.components.call
    if (call == null) {
      const err = new Error('this node makes no outgoing calls')
      err.name = 'UnavailableError'
      throw err
    }
    const options: HostCallOptions = { version: msg.version, class: this.klass, signal: this.lifetime.signal }
    if (msg.options.deadlineMs != null) options.deadlineMs = msg.options.deadlineMs
    if (msg.options.alternatives != null) options.alternatives = msg.options.alternatives
    if (msg.options.object != null) options.object = msg.options.object
    const value = await call.call(this.components, msg.peer, msg.method, msg.args, options)
    return value === undefined ? null : value
  }

  private async storeOp (msg: Extract<FromWorker, { t: 'store' }>): Promise<unknown> {
    const binding = this.stores.get(msg.ns)
    if (binding == null) {
      throw new ReadOnlyStoreError(`no store "${msg.ns}" here`)
    }
    const store = createAppStore(binding.datastore, { readOnly: binding.readOnly })
    switch (msg.op) {
      case 'get': return await store.get(msg.key as string)
      case 'put': await store.put(msg.key as string, msg.value as Value); return null
      case 'delete': await store.delete(msg.key as string); return null
      case 'entries': {
        const out: Array<[string, Value]> = []
        for await (const entry of store.entries(msg.prefix)) out.push(entry)
        return out
      }
      case 'batch': {
        if (binding.readOnly) throw new ReadOnlyStoreError('this store is read only')
        if (!Array.isArray(msg.writes)) throw new InvalidStoreKeyError('batch: writes must be an array')
        await applyWrites(binding.datastore, msg.writes)
        return null
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// bundles on disk

interface Resolved {
  dir: string
  url: string
}

interface ResolvedSpec {
  class: string
  version: number
  stateVersion: number
  current: Resolved
  past: Array<{ from: number, to: number, class: string, stateVersion: number, module: Resolved }>
  future: Array<{ version: number, module: Resolved }>
}

function checkVersion (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidHostSpecError(`${what}: must be a non-negative safe integer (got ${String(v)})`)
  }
  return v
}

// ---------------------------------------------------------------------------------------------
// the host

class DefaultAppHost implements AppHost {
  readonly events = new TypedEventEmitter<HostEvents>()
  private readonly dir: string
  private readonly ownsDir: boolean
  private readonly callTimeoutMs: number
  private readonly watchdogMs: number
  private readonly heartbeatMs: number
  private readonly startTimeoutMs: number
  private readonly memoryMb: number
  private readonly maxRestarts: number
  private readonly quiesceMs: number
  private readonly stopMs: number
  private readonly transformMs: number
  private readonly peersRefreshMs: number

  private spec: ResolvedSpec | undefined
  private run: WorkerRun | undefined
  private starting: Promise<WorkerRun> | undefined
  private failed: Error | undefined
  private quiesced = false
  private generation = 0
  private failures = 0
  private heartbeat: ReturnType<typeof setInterval> | undefined
  private lastPeers = ''
  private ops: Promise<unknown> = Promise.resolve()
  /** the prepared worker (or the one preparing), by the URL of the bundle it imported */
  private standby: Standby | undefined

  private readonly components: HostComponents

  constructor (components: HostComponents, init: HostInit = {}) {
    this.components = components
    if (components?.store == null || typeof components.store.namespace !== 'function') {
      throw new InvalidHostSpecError('components.store: must have namespace(name)')
    }
    if (typeof components.self?.peerId !== 'string') {
      throw new InvalidHostSpecError('components.self.peerId: must be a string')
    }
    this.ownsDir = init.dir == null
    this.dir = resolve(init.dir ?? join(tmpdir(), `molt-host-${randomBytes(6).toString('hex')}`))
    this.callTimeoutMs = positive(init.callTimeoutMs, 10_000, 'callTimeoutMs')
    this.watchdogMs = positive(init.watchdogMs, 5_000, 'watchdogMs')
    this.heartbeatMs = positive(init.heartbeatMs, 1_000, 'heartbeatMs')
    this.startTimeoutMs = positive(init.startTimeoutMs, 30_000, 'startTimeoutMs')
    this.memoryMb = positive(init.memoryMb, 128, 'memoryMb')
    this.maxRestarts = Math.floor(positive(init.maxRestarts ?? 3, 3, 'maxRestarts'))
    this.quiesceMs = positive(init.quiesceMs, 5_000, 'quiesceMs')
    this.stopMs = positive(init.stopMs, 1_000, 'stopMs')
    this.transformMs = positive(init.transformMs, 60_000, 'transformMs')
    this.peersRefreshMs = positive(init.peersRefreshMs, 1_000, 'peersRefreshMs')
  }

  /** Runs management operations one at a time. */
  private serial<T> (fn: () => Promise<T>): Promise<T> {
    const next = this.ops.then(fn, fn)
    this.ops = next.catch(() => {})
    return next
  }

  // ---- bundles -------------------------------------------------------------------------------

  async moduleUrl (bundle: BundleSource, options: AbortOptions = {}): Promise<string> {
    return (await this.materialise(bundle, options.signal)).url
  }

  private async materialise (source: BundleSource, signal?: AbortSignal): Promise<Resolved> {
    const cid = CID.asCID(source)
    let files: Map<string, Uint8Array> | undefined
    let name: string
    let entry = 'index.js'
    if (cid != null) {
      if (this.components.bundles == null) {
        throw new InvalidHostSpecError('a bundle given by CID needs components.bundles')
      }
      files = await this.components.bundles.files(cid)
      name = cid.toString()
    } else if (source != null && typeof source === 'object' && 'files' in source) {
      files = source.files instanceof Map ? source.files : new Map(Object.entries(source.files))
      const hash = createHash('sha256')
      for (const [path, bytes] of [...files].sort((a, b) => a[0] < b[0] ? -1 : 1)) {
        hash.update(`${path}\0${bytes.byteLength}\0`)
        hash.update(bytes)
      }
      name = `sha256-${hash.digest('hex').slice(0, 40)}`
      entry = source.entry ?? entry
    } else if (source != null && typeof source === 'object' && 'dir' in source && typeof source.dir === 'string') {
      entry = validatePath(source.entry ?? entry)
      const dir = resolve(source.dir)
      return { dir, url: pathToFileURL(join(dir, entry)).href }
    } else {
      throw new InvalidHostSpecError('bundle: must be a CID, { files } or { dir }')
    }
    signal?.throwIfAborted()
    entry = validatePath(entry)
    if (!files.has(entry)) {
      throw new AppLoadError(`the bundle has no entry module "${entry}"`)
    }
    const dir = join(this.dir, name)
    const marker = join(dir, '.molt-complete')
    const done = await stat(marker).then(() => true, () => false)
    if (!done) {
      for (const [path, bytes] of files) {
        const target = join(dir, validatePath(path))
        if (relative(dir, target).startsWith(`..${sep}`)) {
          throw new AppLoadError(`bundle path ${path} escapes its directory`)
        }
        await mkdir(dirname(target), { recursive: true })
        await writeFile(target, bytes)
      }
      if (!files.has('package.json')) {
        // bundles are ES modules: said so for Node and for any loader in front of it (tsx would
        // otherwise compile a bare .js file to CommonJS, out of strict mode)
        await writeFile(join(dir, 'package.json'), '{"type":"module"}\n')
      }
      await writeFile(marker, '')
    }
    return { dir, url: pathToFileURL(join(dir, entry)).href }
  }

  private async resolveSpec (spec: HostSpec, signal?: AbortSignal): Promise<ResolvedSpec> {
    if (spec?.current == null) {
      throw new InvalidHostSpecError('spec.current: required')
    }
    const klass = validateClass(spec.current.class)
    const version = checkVersion(spec.current.version, 'current.version')
    const past = [...(spec.past ?? [])]
    const future = [...(spec.future ?? [])]
    let expectTo = version - 1
    for (const link of past) {
      const from = checkVersion(link.from, 'past.from')
      const to = checkVersion(link.to, 'past.to')
      // a gap between links (or below the current version) is a run of versions that ran the
      // current link's code: the caller answers those itself (the manager's aliases)
      if (to > expectTo || from > to) {
        throw new InvalidHostSpecError(`past: links must be newest first, not overlapping, below ${version} (got ${from}-${to}, expected one ending at or below ${expectTo})`)
      }
      expectTo = from - 1
    }
    // future links may skip versions (one that failed here, or whose upgrade names another
    // class): each future-SO simulates its version by calling the next-older link
    let above = version
    for (const link of future) {
      if (checkVersion(link.version, 'future.version') <= above) {
        throw new InvalidHostSpecError(`future: links must be oldest first, each above ${above} (got ${link.version})`)
      }
      above = link.version
    }
    const resolved: ResolvedSpec = {
      class: klass,
      version,
      stateVersion: spec.current.stateVersion != null ? checkVersion(spec.current.stateVersion, 'current.stateVersion') : version,
      current: await this.materialise(spec.current.bundle, signal),
      past: [],
      future: []
    }
    for (const link of past) {
      resolved.past.push({
        from: link.from,
        to: link.to,
        class: link.class != null ? validateClass(link.class) : klass,
        stateVersion: link.stateVersion != null ? checkVersion(link.stateVersion, 'past.stateVersion') : link.to,
        module: await this.materialise(link.bundle, signal)
      })
    }
    for (const link of future) {
      resolved.future.push({ version: link.version, module: await this.materialise(link.bundle, signal) })
    }
    return resolved
  }

  // ---- workers -------------------------------------------------------------------------------

  private serveData (spec: ResolvedSpec): { data: ServeData, stores: Map<string, StoreBinding> } {
    const stores = new Map<string, StoreBinding>()
    const bind = (ns: string, readOnly = false): string => {
      stores.set(ns, { datastore: this.components.store.namespace(ns), readOnly })
      return ns
    }
    const data: ServeData = {
      mode: 'serve',
      api: MOLT_APP_API,
      self: { peerId: this.components.self.peerId, class: spec.class },
      peers: this.peers(),
      current: { version: spec.version, namespace: bind(appNamespace(spec.class, spec.stateVersion)), module: { url: spec.current.url } },
      past: spec.past.map(l => ({ from: l.from, to: l.to, namespace: bind(pastSoNamespace(l.to)), old: bind(appNamespace(l.class, l.stateVersion), true), module: { url: l.module.url } })),
      future: spec.future.map(l => ({ version: l.version, namespace: bind(futureSoNamespace(l.version)), module: { url: l.module.url } }))
    }
    return { data, stores }
  }

  private peers (): string[] {
    try {
      const list = this.components.peers?.() ?? []
      return Array.isArray(list) ? list.map(String) : []
    } catch {
      return []
    }
  }

  private onLog = (version: number, message: string, args: Value[]): void => {
    appLog('%s %s %o', version >= 0 ? `v${version}` : 'app', message, args)
    this.events.safeDispatchEvent('app:log', { detail: { version, message, args } })
  }

  /** Starts a serving worker for `spec` and waits until its objects exist. */
  private async startWorker (spec: ResolvedSpec, signal?: AbortSignal): Promise<WorkerRun> {
    const { data, stores } = this.serveData(spec)
    this.generation++
    const prepared = await this.takeStandby(spec.current.url)
    const run = new WorkerRun(prepared ?? spawnWorker(data, this.memoryMb), this.memoryMb, stores, this.components, spec.class, this.onEnd, this.onLog)
    if (prepared != null) run.post({ t: 'begin', data })
    try {
      await this.started(run, `version ${spec.version} did not start`, signal)
    } catch (err) {
      const e = err as Error
      if (e instanceof AppLoadError || e instanceof AppApiMismatchError) throw e
      throw new AppLoadError(`version ${spec.version} of ${spec.class} failed to start: ${e.message}`, { cause: e })
    }
    this.lastPeers = data.peers.join('\n')
    log('worker %d (thread %d) serves %s@%d with %d past and %d future links', this.generation, run.threadId, spec.class, spec.version, spec.past.length, spec.future.length)
    this.events.safeDispatchEvent('worker:started', { detail: { generation: this.generation, threadId: run.threadId, version: spec.version } })
    this.startHeartbeat()
    return run
  }

  /**
   * Waits until `run` reports ready, within `startTimeoutMs` (then `AppLoadError`: "`what` within
   * … ms") and the signal; a run that does not start is ended.
   */
  private async started (run: WorkerRun, what: string, signal?: AbortSignal): Promise<void> {
    const timer = setTimeout(() => { run.end(new AppLoadError(`${what} within ${this.startTimeoutMs} ms`)) }, this.startTimeoutMs)
    try {
      await raceSignal(run.started, signal, () => signal?.reason instanceof Error ? signal.reason : new AppLoadError('start aborted'))
    } catch (err) {
      run.end(err as Error)
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  /** A worker ended: if it was the serving one, restart the spec (a soft restart). */
  private readonly onEnd = (run: WorkerRun, error: Error): void => {
    if (run !== this.run) return
    this.run = undefined
    if (this.spec == null) return
    log.error('worker %d ended: %s; restarting', run.threadId, error.message)
    this.events.safeDispatchEvent('worker:restarting', { detail: { reason: error.message, error } })
    this.scheduleRestart(this.spec)
  }

  private scheduleRestart (spec: ResolvedSpec): void {
    const attempt = async (): Promise<WorkerRun> => {
      while (true) {
        if (this.spec !== spec) throw new WorkerCrashedError('the spec changed while restarting')
        try {
          const run = await this.startWorker(spec)
          if (this.spec !== spec) {
            run.end(new WorkerCrashedError('replaced'))
            throw new WorkerCrashedError('the spec changed while restarting')
          }
          this.failures = 0
          this.run = run
          this.quiesced = false
          return run
        } catch (err) {
          if (this.spec !== spec) throw err
          this.failures++
          if (this.failures >= this.maxRestarts) {
            const error = new WorkerFailedError(`the worker failed to restart ${this.failures} times: ${(err as Error).message}`, { cause: err })
            this.failed = error
            log.error('%s', error.message)
            this.events.safeDispatchEvent('worker:failed', { detail: { error } })
            throw error
          }
          await new Promise(resolve => setTimeout(resolve, 100 * 2 ** this.failures))
        }
      }
    }
    const starting = attempt()
    starting.catch(() => {})
    this.starting = starting
    void starting.finally(() => {
      if (this.starting === starting) this.starting = undefined
    }).catch(() => {})
  }

  private startHeartbeat (): void {
    if (this.heartbeat != null) return
    let peerTick = 0
    const every = Math.min(this.heartbeatMs, this.peersRefreshMs)
    this.heartbeat = setInterval(() => {
      const run = this.run
      if (run == null || run.ended) return
      const now = Date.now()
      if (run.pingSentAt != null) {
        if (now - run.pingSentAt > this.watchdogMs) {
          log.error('worker %d answered no ping for %d ms: ending it', run.threadId, now - run.pingSentAt)
          run.end(new WorkerCrashedError(`the worker stopped answering for ${this.watchdogMs} ms and was restarted`))
        }
      } else {
        run.pingSentAt = now
        run.post({ t: 'ping', id: 0 })
      }
      peerTick += every
      if (peerTick >= this.peersRefreshMs) {
        peerTick = 0
        this.refreshPeers(run)
      }
    }, every)
    this.heartbeat.unref?.()
  }

  private refreshPeers (run: WorkerRun): void {
    const peers = this.peers()
    const key = peers.join('\n')
    if (key !== this.lastPeers) {
      this.lastPeers = key
      run.post({ t: 'peers', peers })
    }
  }

  /** The serving worker, waiting for a restart in progress. */
  private async serving (signal?: AbortSignal): Promise<WorkerRun> {
    const run = this.run
    if (run != null && !run.ended) return run
    if (this.spec == null) {
      throw this.failed ?? new HostNotLoadedError('no version is loaded')
    }
    if (this.failed != null) throw this.failed
    const starting = this.starting
    if (starting == null) {
      throw new WorkerFailedError('no worker is running')
    }
    return await raceSignal(starting, signal, () => new HostTimeoutError('the call was aborted while the worker restarted'))
  }

  /** Ends the serving worker: objects' `stop()` first (bounded), then the thread. */
  private async endWorker (reason: string): Promise<void> {
    const run = this.run
    this.run = undefined
    this.starting = undefined
    if (run == null || run.ended) return
    try {
      await run.request(id => ({ t: 'stop', id }), AbortSignal.timeout(this.stopMs), () => new HostTimeoutError('stop timed out'))
    } catch (err) {
      log('objects did not stop cleanly: %s', (err as Error).message)
    }
    run.end(new WorkerCrashedError(reason))
    await run.worker.terminate().catch(() => {})
  }

  // ---- public API ----------------------------------------------------------------------------

  async load (spec: HostSpec, options: AbortOptions = {}): Promise<void> {
    await this.serial(async () => {
      const resolved = await this.resolveSpec(spec, options.signal)
      if (this.standby != null && this.standby.url !== resolved.current.url) this.dropStandby()
      // first, so a restart in progress ends the worker it starts instead of adopting it
      this.spec = undefined
      await this.endWorker(`replaced by version ${resolved.version}`)
      this.failed = undefined
      this.failures = 0
      this.quiesced = false
      const run = await this.startWorker(resolved, options.signal)
      this.spec = resolved
      this.run = run
    })
  }

  async installFuture (link: FutureLinkSpec, options: AbortOptions = {}): Promise<void> {
    await this.serial(async () => {
      const spec = this.spec
      if (spec == null) throw new HostNotLoadedError('no version is loaded')
      const above = spec.future.at(-1)?.version ?? spec.version
      if (checkVersion(link?.version, 'version') <= above) {
        throw new InvalidHostSpecError(`future-SO for version ${link.version}: future-SOs are installed oldest first, above ${above}`)
      }
      const module = await this.materialise(link.bundle, options.signal)
      const run = await this.serving(options.signal)
      const namespace = futureSoNamespace(link.version)
      // the worker needs the store before the SO factory runs
      const stores = run.stores
      stores.set(namespace, { datastore: this.components.store.namespace(namespace), readOnly: false })
      try {
        await run.request(id => ({ t: 'future', id, version: link.version, namespace, module: { url: module.url } }), options.signal, () => new HostTimeoutError('installFuture aborted'))
      } catch (err) {
        stores.delete(namespace)
        const e = err as Error
        if (e instanceof AppLoadError || e instanceof AppApiMismatchError) throw e
        throw new AppLoadError(`the future-SO for version ${link.version} failed to start: ${e.message}`, { cause: e })
      }
      spec.future.push({ version: link.version, module })
      log('installed the future-SO for version %d', link.version)
    })
  }

  readonly invoke = async (request: HostInvokeRequest): Promise<Value> => {
    const signal = request.signal
    signal?.throwIfAborted()
    if (request.object != null) {
      throw new TargetNotLoadedError(`this node runs one object; "${request.object}" is not one`)
    }
    const run = await this.serving(signal)
    run.inflight++
    let timer: ReturnType<typeof setTimeout> | undefined
    let callId = 0
    try {
      const work = run.request(id => ({
        t: 'invoke',
        id: (callId = id),
        kind: request.target.kind,
        version: request.target.version,
        method: request.method,
        args: request.args as Value[],
        peer: String(request.peer),
        caller: { version: request.caller.version, class: request.caller.class }
      }), signal, (id) => {
        run.post({ t: 'abort', id })
        return signal?.reason instanceof Error ? signal.reason : new HostTimeoutError('the call was aborted')
      })
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => {
          reject(new HostTimeoutError(`${request.method} did not finish within ${this.callTimeoutMs} ms`))
        }, this.callTimeoutMs)
      })
      return await Promise.race([work, timeout]) as Value
    } catch (err) {
      if (err instanceof HostTimeoutError && run.pending.delete(callId)) {
        // release its section at the worker; the heartbeat catches a worker that hangs
        run.post({ t: 'abort', id: callId })
      }
      throw err
    } finally {
      clearTimeout(timer)
      run.callDone()
    }
  }

  async quiesce (options: AbortOptions = {}): Promise<void> {
    const signal = options.signal ?? AbortSignal.timeout(this.quiesceMs)
    const run = await this.serving(signal)
    this.quiesced = true
    const deadline = (): Error => new QuiesceTimeoutError('the running version did not quiesce before the deadline')
    await raceSignal(run.request(id => ({ t: 'quiesce', id, ms: this.quiesceMs }), signal, deadline), signal, deadline)
    await raceSignal(run.idle(), signal, deadline)
  }

  async resume (options: AbortOptions = {}): Promise<void> {
    await this.serial(async () => {
      const spec = this.spec
      if (spec == null || !this.quiesced) return
      await this.endWorker('resumed')
      this.quiesced = false
      this.run = await this.startWorker(spec, options.signal)
    })
  }

  async health (options: AbortOptions = {}): Promise<CheckReport> {
    let run: WorkerRun
    try {
      run = await this.serving(options.signal)
    } catch (err) {
      return { ok: false, failures: [`not running: ${(err as Error).message}`] }
    }
    const signal = options.signal ?? AbortSignal.timeout(this.callTimeoutMs)
    try {
      const answers = await run.request(id => ({ t: 'health', id }), signal, () => new HostTimeoutError('the health check did not answer in time')) as HealthAnswer
      const failures = answers.filter(a => !a.report.ok).map(a => `${a.object}: ${(a.report as HealthReport).detail ?? 'unhealthy'}`)
      return { ok: failures.length === 0, failures }
    } catch (err) {
      return { ok: false, failures: [`health check failed: ${(err as Error).name}: ${(err as Error).message}`] }
    }
  }

  async observe (name: string, args: Value[] = [], options: AbortOptions = {}): Promise<Value> {
    const run = await this.serving(options.signal)
    const signal = options.signal ?? AbortSignal.timeout(this.callTimeoutMs)
    return await run.request(id => ({ t: 'observe', id, name, args }), signal, () => new HostTimeoutError(`observer ${name} did not answer in time`)) as Value
  }

  state (): ReadonlyAppStore {
    const spec = this.spec
    if (spec == null) throw new HostNotLoadedError('no version is loaded')
    return createReadonlyAppStore(this.components.store.namespace(appNamespace(spec.class, spec.stateVersion)))
  }

  /**
   * Runs a job in a new worker or, with `keep` (a forward TF), in the prepared one for its bundle;
   * with `keep`, the worker of a job that succeeded is parked for the next `load` of that bundle
   * instead of ended. An invariant check leaves the prepared worker alone.
   */
  private async job (data: JobData, stores: Map<string, StoreBinding>, deadlineMs: number, signal: AbortSignal | undefined, keep: boolean): Promise<unknown> {
    const ended = Promise.withResolvers<never>()
    ended.promise.catch(() => {})
    const prepared = keep ? await this.takeStandby(data.module.url) : undefined
    const run = new WorkerRun(prepared ?? spawnWorker(data, this.memoryMb), this.memoryMb, stores, this.components, '', (_r, error) => { ended.reject(error) }, this.onLog)
    const result = Promise.withResolvers<unknown>()
    run.pending.set(0, result)
    if (prepared != null) run.post({ t: 'begin', data })
    let timer: ReturnType<typeof setTimeout> | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new TransformTimeoutError(`the ${data.mode === 'transform' ? 'TF' : 'invariant check'} did not finish within ${deadlineMs} ms`)) }, deadlineMs)
    })
    let done = false
    try {
      const value = await raceSignal(Promise.race([result.promise, ended.promise, timeout]), signal, () => new TransformTimeoutError('aborted'))
      done = true
      return value
    } catch (err) {
      if (err instanceof WorkerCrashedError) {
        throw new TransformFailedError(`the ${data.mode === 'transform' ? 'TF' : 'invariant check'} worker ended: ${err.message}`, { cause: err })
      }
      throw err
    } finally {
      clearTimeout(timer)
      if (done && keep && !run.ended) {
        this.park(data.module.url, run.release())
      } else {
        run.post({ t: 'abort', id: 0 })
        run.end(new WorkerCrashedError('job done'))
        await run.worker.terminate().catch(() => {})
      }
    }
  }

  // ---- the prepared worker ---------------------------------------------------------------------

  async prepare (bundle: BundleSource, options: AbortOptions = {}): Promise<void> {
    const { url } = await this.materialise(bundle, options.signal)
    const current = this.standby
    if (current?.url === url && await current.ready.then(p => p != null && !p.gone)) return
    if (this.standby === current) this.dropStandby()
    const data: StandbyData = { mode: 'standby', api: MOLT_APP_API, modules: [{ url }] }
    const run = new WorkerRun(spawnWorker(data, this.memoryMb), this.memoryMb, new Map(), this.components, '', () => {}, this.onLog)
    const ready = (async (): Promise<ParkedWorker> => {
      await this.started(run, `the prepared worker did not import ${url}`, options.signal)
      return new ParkedWorker(run.release())
    })()
    const entry: Standby = { url, ready: ready.catch(() => undefined) }
    this.standby = entry
    try {
      const parked = await ready
      entry.parked = parked
      // replaced or dropped while it started
      if (this.standby !== entry) parked.end()
      else log('prepared worker (thread %d) imported %s', parked.threadId, url)
    } catch (err) {
      if (this.standby === entry) this.standby = undefined
      throw err
    }
  }

  /** Keeps a worker with `url` imported and nothing to do, for the next run of that bundle. */
  private park (url: string, worker: Worker): void {
    this.dropStandby()
    const parked = new ParkedWorker(worker)
    this.standby = { url, ready: Promise.resolve(parked), parked }
  }

  /** The prepared worker, when it holds `url`; it is no longer prepared. */
  private async takeStandby (url: string): Promise<Worker | undefined> {
    const s = this.standby
    if (s == null || s.url !== url) return undefined
    this.standby = undefined
    return (await s.ready)?.take()
  }

  private dropStandby (): void {
    const s = this.standby
    this.standby = undefined
    void s?.ready.then(p => { p?.end() })
  }

  async transform (request: TransformRequest): Promise<TransformResult> {
    const module = await this.materialise(request.bundle, request.signal)
    const ns = this.components.store
    const next = ns.namespace(request.to)
    await clearStore(next)
    const stores = new Map<string, StoreBinding>([
      ['old', { datastore: ns.namespace(request.from), readOnly: true }],
      ['future', { datastore: ns.namespace(request.futureState), readOnly: true }],
      ['next', { datastore: next, readOnly: false }]
    ])
    const data: JobData = { mode: 'transform', api: MOLT_APP_API, module: { url: module.url }, reverse: request.reverse === true, now: request.now, seed: request.seed, invariants: request.invariants === true }
    // a forward TF's worker serves the version it transformed to next; a reverse TF's module is
    // the newer one, which is not loaded next
    const report = await this.job(data, stores, positive(request.deadlineMs, this.transformMs, 'deadlineMs'), request.signal, request.reverse !== true) as CheckReport | null
    log('%s from %s to %s done', request.reverse === true ? 'reverse TF' : 'TF', request.from, request.to)
    return report == null ? {} : { invariants: report }
  }

  async invariants (bundle: BundleSource, namespace: string, options: AbortOptions = {}): Promise<CheckReport> {
    const module = await this.materialise(bundle, options.signal)
    const stores = new Map<string, StoreBinding>([['state', { datastore: this.components.store.namespace(namespace), readOnly: true }]])
    const data: JobData = { mode: 'invariants', api: MOLT_APP_API, module: { url: module.url } }
    try {
      return await this.job(data, stores, this.transformMs, options.signal, false) as CheckReport
    } catch (err) {
      const e = err as Error
      return { ok: false, failures: [`invariants could not run: ${e.name}: ${e.message}`] }
    }
  }

  status (): HostStatus {
    const spec = this.spec
    const run = this.run
    const status: HostStatus = {
      state: this.failed != null ? 'failed' : spec == null ? 'idle' : run != null && !run.ended ? 'running' : 'starting',
      generation: this.generation,
      past: spec?.past.map(l => [l.from, l.to] as [number, number]) ?? [],
      future: spec?.future.map(l => l.version) ?? [],
      quiesced: this.quiesced
    }
    if (run != null && !run.ended) status.threadId = run.threadId
    const parked = this.standby?.parked
    if (parked != null && !parked.gone) status.prepared = parked.threadId
    if (spec != null) {
      status.class = spec.class
      status.version = spec.version
    }
    return status
  }

  async unload (): Promise<void> {
    await this.serial(async () => {
      this.spec = undefined
      this.failed = undefined
      await this.endWorker('unloaded')
    })
  }

  async stop (): Promise<void> {
    await this.serial(async () => {
      this.dropStandby()
      this.spec = undefined
      this.failed = undefined
      if (this.heartbeat != null) {
        clearInterval(this.heartbeat)
        this.heartbeat = undefined
      }
      await this.endWorker('the host stopped')
      if (this.ownsDir) {
        await rm(this.dir, { recursive: true, force: true })
      }
    })
  }
}

/**
 * Creates a node's host. Nothing runs until `load`.
 */
export function createHost (components: HostComponents, init: HostInit = {}): AppHost {
  return new DefaultAppHost(components, init)
}

/** @internal for tests: the worker module's URL */
export const HOST_WORKER_URL = WORKER_URL.href

