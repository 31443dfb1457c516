/**
 * The worker side of the host: imports the bundles of one node's app (the current object, its
 * past-SO chain and its future-SO chain), creates the objects, and runs calls on them in a serial
 * order (decision 7). Also runs one-off jobs: a TF, or an invariant check. A worker may take
 * its tasks one after another (`begin`): a prepared worker imports its bundle, waits, runs the
 * TF, then serves the version the TF transformed to.
 *
 * Atomic sections: every call (and every host-timer callback) runs in a section; one section at
 * a time holds the node. Local delegation (an SO calling the next link) runs inside the caller's
 * section. An outgoing `host.call` releases the section while it waits and takes it again before
 * the app code continues, so a recursive A→B→A chain cannot deadlock. The section of the running
 * code is tracked with `AsyncLocalStorage`.
 *
 * Internal: started by `createHost`, never imported by the package's users.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { parentPort, workerData } from 'node:worker_threads'
import { toWire, type FromWorker, type HealthAnswer, type JobData, type ModuleRef, type ServeData, type ToWorker, type WireCallOptions, type WireError, type WorkerData } from './protocol.ts'
import { satisfies } from './semver.ts'
import type {
  AppObject, AppStore, CallContext, ClassModule, Delegate, HostApi, HostTimers, Invariant, OutgoingCallOptions,
  ReadonlyAppStore, TransformContext, Value
} from './model.ts'

const port = parentPort
if (port == null) {
  throw new Error('the molt host worker must run in a worker thread')
}
const data = workerData as WorkerData


function post (message: FromWorker): void {
  port!.postMessage(message)
}

/** An error whose name the worker chose (host-side failures raised inside the worker). */
function named (name: string, message: string): Error {
  const err = new Error(message)
  err.name = name
  return err
}

function fromWire (error: WireError): Error {
  return named(error.name, error.message)
}

// ---------------------------------------------------------------------------------------------
// requests to the main thread

let nextId = 0
const waiting = new Map<number, { resolve: (value: unknown) => void, reject: (err: Error) => void }>()

type Outgoing = Extract<FromWorker, { t: 'call' | 'store' }>
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never

function request (message: WithoutId<Outgoing>): Promise<unknown> {
  const id = ++nextId
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject })
    post({ ...message, id } as FromWorker)
  })
}

// ---------------------------------------------------------------------------------------------
// stores

let readOnlyDepth = 0

function makeStore (ns: string, readOnly: boolean): AppStore {
  const refuse = (): never => { throw named('ReadOnlyStoreError', 'this store is read only here') }
  return {
    async get (key: string): Promise<Value | undefined> {
      const v = await request({ t: 'store', ns, op: 'get', key })
      return v === undefined ? undefined : v as Value
    },
    async put (key: string, value: Value): Promise<void> {
      if (readOnly || readOnlyDepth > 0) refuse()
      await request({ t: 'store', ns, op: 'put', key, value })
    },
    async delete (key: string): Promise<void> {
      if (readOnly || readOnlyDepth > 0) refuse()
      await request({ t: 'store', ns, op: 'delete', key })
    },
    async * entries (prefix?: string): AsyncIterable<[string, Value]> {
      const list = await request({ t: 'store', ns, op: 'entries', ...(prefix != null ? { prefix } : {}) }) as Array<[string, Value]>
      yield * list
    }
  }
}

/** Writes a TF buffers before sending them to the main thread in one batch. */
const TF_BATCH_WRITES = 256

/**
 * The store a TF writes: puts and deletes are buffered and sent in batches (one message and one
 * datastore batch per {@link TF_BATCH_WRITES}, the rest at `flush`), not one round trip to the
 * main thread per record, whose event loop a node under upgrade shares with its network traffic.
 * Reads see the buffered writes. A bad key or value fails the TF at the flush that carries it
 * rather than at its own `put`; the TF's namespace is wiped before any re-run, so nothing
 * half-written survives either way.
 */
function writeBehindStore (ns: string): AppStore & { flush: () => Promise<void> } {
  const base = makeStore(ns, false)
  const pending = new Map<string, { value?: Value }>()
  const flush = async (): Promise<void> => {
    if (pending.size === 0) return
    const writes = [...pending].map(([key, w]) => 'value' in w ? { key, value: w.value } : { key })
    pending.clear()
    await request({ t: 'store', ns, op: 'batch', writes })
  }
  const write = async (key: string, w: { value?: Value }): Promise<void> => {
    if (readOnlyDepth > 0) throw named('ReadOnlyStoreError', 'this store is read only here')
    // re-inserted, so that the batch keeps the order of the last writes
    pending.delete(key)
    pending.set(key, w)
    if (pending.size >= TF_BATCH_WRITES) await flush()
  }
  return {
    async get (key: string): Promise<Value | undefined> {
      const w = pending.get(key)
      if (w != null) return w.value
      return await base.get(key)
    },
    async put (key: string, value: Value): Promise<void> { await write(key, { value }) },
    async delete (key: string): Promise<void> { await write(key, {}) },
    async * entries (prefix?: string): AsyncIterable<[string, Value]> {
      await flush()
      yield * base.entries(prefix)
    },
    flush
  }
}

function readonly (store: AppStore): ReadonlyAppStore {
  return { get: store.get.bind(store), entries: store.entries.bind(store) }
}

// ---------------------------------------------------------------------------------------------
// atomic sections

interface Token {
  /** aborts at the call's deadline */
  readonly signal: AbortSignal
  /** outgoing calls of this section in flight */
  outstanding: number
  /** resolved when the section holds the node again after its outgoing calls */
  resumed?: PromiseWithResolvers<void>
  /** the section ended (or was cut at its deadline): it holds nothing any more */
  done: boolean
}

const sections = new AsyncLocalStorage<Token>()
let holder: Token | undefined
const queue: Array<{ token: Token, resolve: () => void }> = []

function acquire (token: Token): Promise<void> | undefined {
  if (holder === token) return undefined
  if (holder == null) {
    holder = token
    return undefined
  }
  return new Promise(resolve => queue.push({ token, resolve }))
}

function release (token: Token): void {
  if (holder !== token) {
    // still queued? then it gives up its place
    const i = queue.findIndex(q => q.token === token)
    if (i >= 0) queue.splice(i, 1)
    return
  }
  holder = undefined
  while (queue.length > 0) {
    const next = queue.shift()!
    if (next.token.done) continue
    holder = next.token
    next.resolve()
    return
  }
}

const NEVER = new AbortController().signal

async function inSection<T> (token: Token, fn: () => T | Promise<T>): Promise<T> {
  const waitFor = acquire(token)
  if (waitFor != null) await waitFor
  if (token.done) throw named('HostTimeoutError', 'the call was cancelled before it ran')
  try {
    return await sections.run(token, fn)
  } finally {
    endSection(token)
  }
}

function endSection (token: Token): void {
  if (token.done) return
  token.done = true
  release(token)
  token.resumed?.resolve()
}

/** Runs an outgoing request with the current section released, then takes the section again. */
async function outside<T> (fn: () => Promise<T>): Promise<T> {
  const token = sections.getStore()
  if (token == null || token.done) return await fn()
  if (token.outstanding++ === 0) {
    token.resumed = Promise.withResolvers<void>()
    release(token)
  }
  const resumed = token.resumed!
  let value: T | undefined
  let failure: { error: unknown } | undefined
  try {
    value = await fn()
  } catch (error) {
    failure = { error }
  }
  if (--token.outstanding === 0) {
    if (!token.done) {
      const waitFor = acquire(token)
      if (waitFor != null) await waitFor
    }
    resumed.resolve()
  } else {
    await resumed.promise
  }
  if (failure != null) throw failure.error
  return value as T
}

// ---------------------------------------------------------------------------------------------
// host API

let peerList: string[] = data.mode === 'serve' ? data.peers : []
let quiesced = false
const timers = new Map<number, ReturnType<typeof setTimeout>>()
let timerIds = 0

function runTimer (fn: () => void, version: number): void {
  const token: Token = { signal: NEVER, outstanding: 0, done: false }
  inSection(token, fn).catch(err => {
    post({ t: 'log', version, message: `a host timer callback threw: ${String((err as Error)?.message ?? err)}`, args: [] })
  })
}

function makeTimers (version: number): HostTimers {
  return {
    setTimeout (fn: () => void, ms: number): number {
      const id = ++timerIds
      if (quiesced) return id
      timers.set(id, setTimeout(() => {
        timers.delete(id)
        runTimer(fn, version)
      }, ms))
      return id
    },
    setInterval (fn: () => void, ms: number): number {
      const id = ++timerIds
      if (quiesced) return id
      timers.set(id, setInterval(() => runTimer(fn, version), ms))
      return id
    },
    clear (id: number): void {
      const t = timers.get(id)
      if (t != null) {
        clearTimeout(t)
        clearInterval(t)
        timers.delete(id)
      }
    }
  }
}

function stopTimers (): void {
  for (const t of timers.values()) {
    clearTimeout(t)
    clearInterval(t)
  }
  timers.clear()
}

function makeHost (version: number, store: AppStore, klass: string, peerId: string): HostApi {
  return {
    self: Object.freeze({ peerId, class: klass, version }),
    async call (peer: string, method: string, args: Value[], options: OutgoingCallOptions = {}): Promise<Value> {
      const wire: WireCallOptions = {}
      if (options.deadlineMs != null) wire.deadlineMs = options.deadlineMs
      if (options.alternatives != null) wire.alternatives = [...options.alternatives]
      if (options.object != null) wire.object = options.object
      return await outside(async () => await request({ t: 'call', peer, method, args, options: wire, version }) as Value)
    },
    peers (): string[] {
      return [...peerList]
    },
    timers: makeTimers(version),
    store,
    log (message: string, ...args: Value[]): void {
      post({ t: 'log', version, message: String(message), args })
    }
  }
}

// ---------------------------------------------------------------------------------------------
// modules

async function importModule (ref: ModuleRef, api: string): Promise<Partial<ClassModule>> {
  let mod: Partial<ClassModule>
  try {
    mod = await import(ref.url) as Partial<ClassModule>
  } catch (err) {
    throw named('AppLoadError', `cannot import ${ref.url}: ${(err as Error)?.message ?? String(err)}`)
  }
  if (typeof mod.moltApi !== 'string') {
    throw named('AppLoadError', `${ref.url} does not export moltApi (the molt API range it needs)`)
  }
  let ok: boolean
  try {
    ok = satisfies(api, mod.moltApi)
  } catch (err) {
    throw named('AppApiMismatchError', `${ref.url}: moltApi "${mod.moltApi}": ${(err as Error).message}`)
  }
  if (!ok) {
    throw named('AppApiMismatchError', `${ref.url} needs molt API ${mod.moltApi}; this host offers ${api}`)
  }
  return mod
}

// ---------------------------------------------------------------------------------------------
// serving

interface Link {
  /** `current@3`, `past@1-2`, `future@4` */
  label: string
  version: number
  object: AppObject
}

let current: Link | undefined
/** newest first */
const past: Array<Link & { from: number, to: number }> = []
/** oldest first */
const future: Link[] = []
const running = new Map<number, { controller: AbortController, token: Token }>()

function delegateTo (link: Link, callerVersion: number, serve: ServeData): Delegate {
  return {
    version: link.version,
    async call (method: string, args: Value[]): Promise<Value> {
      const token = sections.getStore()
      const context: CallContext = {
        peer: serve.self.peerId,
        caller: { version: callerVersion, class: serve.self.class },
        signal: token?.signal ?? NEVER
      }
      return await callMethod(link, method, args, context)
    }
  }
}

async function callMethod (link: Link, method: string, args: Value[], context: CallContext): Promise<Value> {
  const methods = link.object.methods
  const fn = methods != null && Object.hasOwn(methods, method) ? methods[method] : undefined
  if (typeof fn !== 'function') {
    throw named('MethodNotFoundError', `${link.label} has no method "${method}"`)
  }
  const result = await fn.call(link.object, args, context)
  return result === undefined ? null : result
}

function checkObject (object: unknown, label: string): AppObject {
  if (object == null || typeof object !== 'object' || (object as AppObject).methods == null || typeof (object as AppObject).methods !== 'object') {
    throw named('AppLoadError', `${label}: the factory did not return an object with methods`)
  }
  return object as AppObject
}

/** The TF of a bundle that exports none: the old state, unchanged. */
async function copyState ({ old, next }: TransformContext): Promise<void> {
  for await (const [key, value] of old.entries()) {
    await next.put(key, value)
  }
}

/**
 * The SO of a bundle that exports none: the versions' types are taken to be the same (each a
 * subtype of the other), so every call goes straight through to the next link. An app whose
 * interface changes exports its SOs.
 */
function passThrough ({ delegate }: { delegate: Delegate }): AppObject {
  const forward = (name: string) => async (args: Value[]) => await delegate.call(name, args)
  return {
    methods: new Proxy({}, {
      get: (_target, name) => typeof name === 'string' ? forward(name) : undefined,
      getOwnPropertyDescriptor: (_target, name) => typeof name === 'string'
        ? { value: forward(name), enumerable: true, configurable: true, writable: false }
        : undefined
    })
  }
}

async function createFuture (serve: ServeData, version: number, namespace: string, ref: ModuleRef): Promise<void> {
  const mod = await importModule(ref, serve.api)
  const factory = typeof mod.futureSO === 'function' ? mod.futureSO : passThrough
  const next = future.at(-1) ?? current!
  const store = makeStore(namespace, false)
  const label = `future@${version}`
  try {
    const object = checkObject(await factory({ delegate: delegateTo(next, version, serve), store, host: makeHost(version, store, serve.self.class, serve.self.peerId) }), label)
    future.push({ label, version, object })
  } catch (err) {
    throw appLoadFailure(label, err)
  }
}

function appLoadFailure (label: string, err: unknown): Error {
  const e = err as Error
  if (e?.name === 'AppLoadError' || e?.name === 'AppApiMismatchError') return e
  return named('AppLoadError', `${label}: its factory threw ${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`)
}

async function startServing (serve: ServeData): Promise<void> {
  const mod = await importModule(serve.current.module, serve.api)
  if (typeof mod.create !== 'function') {
    throw named('AppLoadError', `${serve.current.module.url} does not export create`)
  }
  const version = serve.current.version
  const store = makeStore(serve.current.namespace, false)
  const label = `current@${version}`
  try {
    current = { label, version, object: checkObject(await mod.create(makeHost(version, store, serve.self.class, serve.self.peerId)), label) }
  } catch (err) {
    throw appLoadFailure(label, err)
  }
  for (const link of serve.past) {
    const pm = await importModule(link.module, serve.api)
    const factory = typeof pm.pastSO === 'function' ? pm.pastSO : passThrough
    const next = past.at(-1) ?? current
    const soStore = makeStore(link.namespace, false)
    const l = link.from === link.to ? `past@${link.to}` : `past@${link.from}-${link.to}`
    try {
      const object = checkObject(await factory({
        delegate: delegateTo(next, link.to, serve),
        store: soStore,
        old: readonly(makeStore(link.old, true)),
        host: makeHost(link.to, soStore, serve.self.class, serve.self.peerId)
      }), l)
      past.push({ label: l, version: link.to, from: link.from, to: link.to, object })
    } catch (err) {
      throw appLoadFailure(l, err)
    }
  }
  for (const link of serve.future) {
    await createFuture(serve, link.version, link.namespace, link.module)
  }
}

function target (kind: 'current' | 'past' | 'future', version: number): Link {
  let link: Link | undefined
  if (kind === 'current') {
    link = current?.version === version ? current : undefined
  } else if (kind === 'past') {
    link = past.find(p => p.from <= version && version <= p.to)
  } else {
    link = future.find(f => f.version === version)
  }
  if (link == null) {
    throw named('TargetNotLoadedError', `no ${kind} object for version ${version} is loaded`)
  }
  return link
}

function allObjects (): Link[] {
  return [...[...future].reverse(), ...(current != null ? [current] : []), ...past]
}

async function answer (id: number, fn: () => Promise<unknown>, app = true): Promise<void> {
  try {
    const value = await fn()
    post({ t: 'res', id, ok: true, value: value === undefined ? null : value })
  } catch (err) {
    post({ t: 'res', id, ok: false, error: toWire(err, app && !isHostError(err)) })
  }
}

const HOST_ERRORS = new Set(['MethodNotFoundError', 'TargetNotLoadedError', 'HostTimeoutError', 'AppLoadError', 'AppApiMismatchError', 'ReadOnlyStoreError', 'InvalidStoreKeyError'])
/** Errors the worker's own code raised (a missing method, an unknown target...), not the app. */
function isHostError (err: unknown): boolean {
  return err instanceof Error && HOST_ERRORS.has(err.name)
}

function onServeMessage (serve: ServeData, msg: ToWorker): void {
  switch (msg.t) {
    case 'invoke': {
      const controller = new AbortController()
      const token: Token = { signal: controller.signal, outstanding: 0, done: false }
      running.set(msg.id, { controller, token })
      void answer(msg.id, async () => {
        try {
          const link = target(msg.kind, msg.version)
          return await inSection(token, async () => await callMethod(link, msg.method, msg.args, { peer: msg.peer, caller: msg.caller, signal: controller.signal }))
        } finally {
          running.delete(msg.id)
        }
      })
      return
    }
    case 'abort': {
      const r = running.get(msg.id)
      if (r != null) {
        r.controller.abort(named('HostTimeoutError', 'the call was cancelled'))
        endSection(r.token)
        running.delete(msg.id)
      }
      return
    }
    case 'future':
      void answer(msg.id, async () => { await createFuture(serve, msg.version, msg.namespace, msg.module) }, false)
      return
    case 'quiesce':
      void answer(msg.id, async () => {
        quiesced = true
        stopTimers()
        const signal = AbortSignal.timeout(Math.max(0, Math.min(msg.ms, 2 ** 31 - 1)))
        for (const link of allObjects()) {
          await link.object.quiesce?.(signal)
        }
      })
      return
    case 'health':
      void answer(msg.id, async () => {
        const reports: HealthAnswer = []
        for (const link of allObjects()) {
          if (typeof link.object.health === 'function') {
            const report = await link.object.health()
            reports.push({ object: link.label, report: { ok: report?.ok === true, ...(report?.detail != null ? { detail: String(report.detail) } : {}) } })
          }
        }
        return reports
      })
      return
    case 'observe':
      void answer(msg.id, async () => {
        const observer = current?.object.observers?.[msg.name]
        if (typeof observer !== 'function' || !Object.hasOwn(current!.object.observers!, msg.name)) {
          throw named('MethodNotFoundError', `${current?.label ?? 'the object'} has no observer "${msg.name}"`)
        }
        const token: Token = { signal: NEVER, outstanding: 0, done: false }
        return await inSection(token, async () => {
          readOnlyDepth++
          try {
            const v = await observer(msg.args)
            return v === undefined ? null : v
          } finally {
            readOnlyDepth--
          }
        })
      })
      return
    case 'stop':
      void answer(msg.id, async () => {
        quiesced = true
        stopTimers()
        for (const link of allObjects()) {
          try {
            await link.object.stop?.()
          } catch {}
        }
      })
      return
    default:
      onCommon(msg)
  }
}

function onCommon (msg: ToWorker): void {
  switch (msg.t) {
    case 'ping':
      post({ t: 'pong', id: msg.id })
      return
    case 'peers':
      peerList = msg.peers
      return
    case 'reply': {
      const w = waiting.get(msg.id)
      if (w != null) {
        waiting.delete(msg.id)
        if (msg.ok) w.resolve(msg.value)
        else w.reject(fromWire(msg.error))
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// jobs

/** sfc32 seeded from a number: a small, well-mixed, deterministic source in [0, 1). */
function seededRandom (seed: number): () => number {
  let a = 0x9e3779b9 ^ (seed >>> 0)
  let b = 0x243f6a88 ^ Math.floor(seed / 2 ** 32)
  let c = 0xb7e15162
  let d = 1
  const next = (): number => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0
    let t = (a + b) | 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) | 0
    c = (c << 21) | (c >>> 11)
    d = (d + 1) | 0
    t = (t + d) | 0
    c = (c + t) | 0
    return (t >>> 0) / 4294967296
  }
  for (let i = 0; i < 15; i++) next()
  return next
}

const jobAbort = new AbortController()

async function runJob (job: JobData): Promise<unknown> {
  const mod = await importModule(job.module, job.api)
  if (job.mode === 'transform') {
    // without a TF the state format is taken to be unchanged: the old state is carried over as
    // it is (a reverse TF, the only way back after admission, must be declared)
    const fn = job.reverse === true ? mod.reverseTransform : (mod.transform ?? copyState)
    if (typeof fn !== 'function') {
      throw named('AppLoadError', `${job.module.url} does not export ${job.reverse === true ? 'reverseTransform' : 'transform'}`)
    }
    const now = job.now ?? 0
    const random = seededRandom(job.seed ?? 0)
    const ambient = { now: Date.now, random: Math.random }
    // a TF re-run must yield the same state: the ambient clock and randomness are the injected ones
    Date.now = () => now
    Math.random = random
    const next = writeBehindStore('next')
    const context: TransformContext = {
      old: readonly(makeStore('old', true)),
      futureState: readonly(makeStore('future', true)),
      next,
      now: () => now,
      random,
      signal: jobAbort.signal
    }
    try {
      await fn(context)
      await next.flush()
    } catch (err) {
      const e = err as Error
      throw named('TransformFailedError', `the ${job.reverse === true ? 'reverse ' : ''}TF threw ${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`)
    } finally {
      // a prepared worker serves the new version next, on the real clock
      Date.now = ambient.now
      Math.random = ambient.random
    }
    if (job.invariants !== true) return null
    return await checkInvariants(mod, readonly(makeStore('next', true)))
  }
  return await checkInvariants(mod, readonly(makeStore('state', true)))
}

async function checkInvariants (mod: Partial<ClassModule>, state: ReadonlyAppStore): Promise<{ ok: boolean, failures: string[] }> {
  const failures: string[] = []
  for (const [name, check] of Object.entries(mod.invariants ?? {}) as Array<[string, Invariant]>) {
    try {
      const r = await check(state)
      if (r !== true) failures.push(`${name}: ${typeof r === 'string' ? r : 'false'}`)
    } catch (err) {
      failures.push(`${name}: threw ${(err as Error)?.name ?? 'Error'}: ${(err as Error)?.message ?? String(err)}`)
    }
  }
  return { ok: failures.length === 0, failures }
}

// ---------------------------------------------------------------------------------------------
// start

process.on('unhandledRejection', (reason) => {
  post({ t: 'log', version: -1, message: `unhandled rejection in app code: ${String((reason as Error)?.message ?? reason)}`, args: [] })
})

/** What this worker does now: nothing yet (prepared), a job, or serving. */
let task: { mode: 'idle' } | { mode: 'job' } | { mode: 'serve', serve: ServeData } = { mode: 'idle' }

function begin (next: ServeData | JobData): void {
  if (task.mode !== 'idle') {
    post({ t: 'fatal', error: toWire(named('AppLoadError', `the worker is busy (${task.mode}): it cannot begin ${next.mode}`)) })
    return
  }
  if (next.mode === 'serve') {
    task = { mode: 'serve', serve: next }
    peerList = next.peers
    startServing(next).then(() => { post({ t: 'ready' }) }, (err) => { post({ t: 'fatal', error: toWire(err) }) })
    return
  }
  task = { mode: 'job' }
  runJob(next).then(
    (value) => { task = { mode: 'idle' }; post({ t: 'res', id: 0, ok: true, value }) },
    (err) => { task = { mode: 'idle' }; post({ t: 'res', id: 0, ok: false, error: toWire(err) }) }
  )
}

port.on('message', (msg: ToWorker) => {
  if (msg.t === 'begin') {
    begin(msg.data)
  } else if (task.mode === 'serve') {
    onServeMessage(task.serve, msg)
  } else if (msg.t === 'abort') {
    if (task.mode === 'job') jobAbort.abort(named('TransformTimeoutError', 'the deadline passed'))
  } else {
    onCommon(msg)
  }
})

if (data.mode === 'standby') {
  // the modules are imported (and checked) now, while the node still serves on its old worker;
  // importing them again later is a cache hit
  Promise.all(data.modules.map(async ref => await importModule(ref, data.api)))
    .then(() => { post({ t: 'ready' }) }, (err) => { post({ t: 'fatal', error: toWire(err) }) })
} else {
  begin(data)
}
