/**
 * The host: isolated workers running app versions (decision 7). Real worker threads, fixture
 * bundles in test/fixtures/apps. No assertion depends on timing; deadlines only bound waits.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { Key } from 'interface-datastore'
import {
  AppApiMismatchError, AppError, AppLoadError, HostNotLoadedError, HostTimeoutError, InvalidHostSpecError, MethodNotFoundError,
  ReadOnlyStoreError, TargetNotLoadedError, WorkerCrashedError, WorkerFailedError, appNamespace, createAppStore, futureSoNamespace, pastSoNamespace,
  satisfies, storeDigest, type AppHost
} from '../../src/host/index.ts'
import { eventually } from '../helpers.ts'
import { app, appFiles, call, testHost, type TestHost } from './setup.ts'

const hosts: TestHost[] = []
async function fresh (...args: Parameters<typeof testHost>): Promise<TestHost> {
  const t = await testHost(...args)
  hosts.push(t)
  return t
}

afterEach(async () => {
  for (const t of hosts.splice(0)) {
    await t.host.stop()
    await t.store.close()
  }
})

const V1 = { current: { class: 'counter', version: 1, bundle: app('counter-v1') } }
const V2 = { current: { class: 'counter', version: 2, bundle: app('counter-v2') }, past: [{ from: 1, to: 1, bundle: app('counter-v2') }] }

async function restartedOnce (host: AppHost): Promise<{ reason: string }> {
  return await new Promise(resolve => {
    host.events.addEventListener('worker:restarting', (e) => { resolve({ reason: e.detail.reason }) }, { once: true })
  })
}

describe('host', () => {
  it('runs calls in a serial order: a read-yield-write counter stays consistent under concurrent calls', async () => {
    const { host } = await fresh()
    await host.load(V1)
    const results = await Promise.all(Array.from({ length: 40 }, async () => await call(host, 'incr')))
    expect([...results as number[]].sort((a, b) => a - b)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1))
    expect(await call(host, 'get')).toBe(40)
    expect(await call(host, 'whoami')).toEqual({ code: 'counter-v1', version: 1, peer: 'self-peer' })
  })

  it('reports an app exception for its call only; the next call works', async () => {
    const { host } = await fresh()
    await host.load(V1)
    const before = host.status().threadId
    const err = await call(host, 'fail').catch(e => e)
    expect(err).toBeInstanceOf(AppError)
    expect(err.name).toBe('TypeError')
    expect(err.message).toBe('the app broke')
    await expect(call(host, 'nope')).rejects.toBeInstanceOf(MethodNotFoundError)
    await expect(call(host, 'get', [], { kind: 'past', version: 0 })).rejects.toBeInstanceOf(TargetNotLoadedError)
    expect(await call(host, 'incr')).toBe(1)
    expect(host.status().threadId).toBe(before)
  })

  it('kills a worker stuck in while(true) with the watchdog and restarts it; later calls succeed', async () => {
    const { host } = await fresh()
    await host.load(V1)
    await call(host, 'incr')
    const first = host.status().threadId
    const restarted = restartedOnce(host)
    const err = await call(host, 'spin').catch(e => e)
    expect(err).toBeInstanceOf(WorkerCrashedError)
    expect((await restarted).reason).toMatch(/stopped answering/)
    // a soft restart: the object recovers from its store
    expect(await call(host, 'incr')).toBe(2)
    expect(host.status().threadId).not.toBe(first)
    expect(host.status().state).toBe('running')
  })

  it('stops a memory hog at the cap and restarts the worker', async () => {
    const { host } = await fresh({ memoryMb: 32 })
    await host.load(V1)
    const restarted = restartedOnce(host)
    const err = await call(host, 'hog').catch(e => e)
    expect(err).toBeInstanceOf(WorkerCrashedError)
    expect((await restarted).reason).toMatch(/memory/)
    expect(await call(host, 'incr')).toBe(1)
  })

  it('cuts a call that never settles at its deadline and releases its atomic section', async () => {
    const { host } = await fresh({ callTimeoutMs: 300 })
    await host.load(V1)
    const thread = host.status().threadId
    await expect(call(host, 'hang')).rejects.toBeInstanceOf(HostTimeoutError)
    expect(await call(host, 'incr')).toBe(1)
    expect(host.status().threadId).toBe(thread)
  })

  it('keeps SO state in its own namespace across a worker restart', async () => {
    const { host, store } = await fresh()
    await host.load(V2)
    expect(await call(host, 'incr', [], { kind: 'past', version: 1 })).toBe(1)
    expect(await call(host, 'incr', [], { kind: 'past', version: 1 })).toBe(2)
    expect(await call(host, 'whoami', [], { kind: 'past', version: 1 })).toMatchObject({ code: 'counter-v2', via: 'past-SO' })
    const thread = host.status().threadId
    const restarted = restartedOnce(host)
    await expect(call(host, 'crash', [], { kind: 'current', version: 2 })).rejects.toBeInstanceOf(WorkerCrashedError)
    await restarted
    expect(await call(host, 'soCalls', [], { kind: 'past', version: 1 })).toBe(2)
    expect(await call(host, 'get', [], { kind: 'current', version: 2 })).toBe(2)
    expect(host.status().threadId).not.toBe(thread)
    expect(await createAppStore(store.namespace(pastSoNamespace(1))).get('calls')).toBe(2)
    expect(await createAppStore(store.namespace(appNamespace('counter', 2))).get('count')).toBe(2)
  })

  it('restarts a worker that exits by itself', async () => {
    const { host } = await fresh()
    await host.load(V1)
    await call(host, 'incr')
    const restarted = restartedOnce(host)
    await expect(call(host, 'crash')).rejects.toBeInstanceOf(WorkerCrashedError)
    expect((await restarted).reason).toMatch(/exited with code 3/)
    expect(await call(host, 'get')).toBe(1)
  })

  it('gives up after maxRestarts failed restarts, reports it, and loads again later', async () => {
    const { host, store } = await fresh({ maxRestarts: 2 })
    await host.load(V1)
    const failed = new Promise<Error>(resolve => {
      host.events.addEventListener('worker:failed', (e) => { resolve(e.detail.error) }, { once: true })
    })
    await createAppStore(store.namespace(appNamespace('counter', 1))).put('poison', true)
    await expect(call(host, 'crash')).rejects.toBeInstanceOf(WorkerCrashedError)
    expect((await failed).message).toMatch(/poisoned state/)
    await expect(call(host, 'get')).rejects.toBeInstanceOf(WorkerFailedError)
    expect(host.status().state).toBe('failed')
    expect((await host.health()).ok).toBe(false)
    await createAppStore(store.namespace(appNamespace('counter', 1))).delete('poison')
    await host.load(V1)
    expect(await call(host, 'get')).toBe(0)
  })

  it('after loading a new version the old code is gone: its methods unreachable, its timers stopped', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    const oldThread = host.status().threadId
    await call(host, 'startTicker', [10])
    const v1 = createAppStore(store.namespace(appNamespace('counter', 1)))
    await eventually(async () => ((await v1.get('ticks')) as number ?? 0) >= 2, 'v1 ticks')
    await host.load(V2)
    expect(host.status()).toMatchObject({ state: 'running', version: 2, past: [[1, 1]] })
    expect(host.status().threadId).not.toBe(oldThread)
    await expect(call(host, 'whoami', [], { kind: 'current', version: 1 })).rejects.toBeInstanceOf(TargetNotLoadedError)
    // version 1 is now answered by v2's past-SO, not v1's code
    expect(await call(host, 'whoami', [], { kind: 'past', version: 1 })).toMatchObject({ code: 'counter-v2', via: 'past-SO' })
    await expect(call(host, 'startTicker', [10], { kind: 'past', version: 1 })).rejects.toBeInstanceOf(MethodNotFoundError)
    const ticks = await v1.get('ticks')
    await new Promise(resolve => setTimeout(resolve, 150))
    expect(await v1.get('ticks')).toBe(ticks)
  })

  it('serves calls at a new version through a future-SO installed on the fly', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    const thread = host.status().threadId
    await call(host, 'incr')
    await host.installFuture({ version: 2, bundle: app('counter-v2') })
    expect(host.status()).toMatchObject({ version: 1, future: [2], threadId: thread })
    const f2 = { kind: 'future', version: 2 } as const
    expect(await call(host, 'incr', [3], f2)).toBe(4)
    expect(await call(host, 'get')).toBe(4)
    expect(await call(host, 'whoami', [], f2)).toMatchObject({ code: 'counter-v1', via: 'future-SO' })
    const refused = await call(host, 'double', [], f2).catch(e => e)
    expect(refused).toBeInstanceOf(AppError)
    expect(refused.name).toBe('SimulationRefusedError')
    await call(host, 'note', ['hello'], f2)
    expect(await createAppStore(store.namespace(futureSoNamespace(2))).get('note')).toBe('hello')
    await expect(host.installFuture({ version: 2, bundle: app('counter-v2') })).rejects.toBeInstanceOf(InvalidHostSpecError)
  })

  it('a version that exports no TF and no SOs carries the state over and passes calls straight through', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    await call(host, 'incr')
    await call(host, 'incr')
    // no futureSO: version-2 calls on this version-1 node reach the version-1 object
    await host.installFuture({ version: 2, bundle: app('counter-v2-plain') })
    expect(await call(host, 'incr', [], { kind: 'future', version: 2 })).toBe(3)
    // no transform: the old state, unchanged
    await host.transform({ bundle: app('counter-v2-plain'), from: 'app/counter/1', futureState: 'so/future/2', to: 'app/counter/2', now: 1, seed: 1 })
    expect(await storeDigest(store.namespace('app/counter/2'))).toBe(await storeDigest(store.namespace('app/counter/1')))
    // no pastSO: version-1 calls on the version-2 node reach the version-2 object
    await host.load({ current: { class: 'counter', version: 2, bundle: app('counter-v2-plain') }, past: [{ from: 1, to: 1, bundle: app('counter-v2-plain') }] })
    expect(await call(host, 'incr', [], { kind: 'past', version: 1 })).toBe(4)
    expect(await call(host, 'code', [], { kind: 'current', version: 2 })).toBe('counter-v2-plain')
    // and a reverse TF is never assumed
    await expect(host.transform({ bundle: app('counter-v2-plain'), reverse: true, from: 'app/counter/2', futureState: 'so/past/1', to: 'app/counter/1', now: 1, seed: 1 }))
      .rejects.toBeInstanceOf(AppLoadError)
  })

  it('runs a TF deterministically: twice on the same input, the same digest of the next store', async () => {
    const { host, store } = await fresh()
    const old = createAppStore(store.namespace('app/counter/1'))
    await old.put('count', 7)
    await old.put('items/a', { x: 1 })
    await old.put('scratch', 'dropped')
    await createAppStore(store.namespace('so/future/2')).put('note', 'kept')
    const request = { bundle: app('counter-v2'), from: 'app/counter/1', futureState: 'so/future/2', to: 'app/counter/2', now: 1_700_000_000_000, seed: 42 }
    const written = async (): Promise<string> => await storeDigest(store.namespace('app/counter/2'))
    const a = await host.transform(request)
    const first = await written()
    // a half-written store from an interrupted run is wiped before the re-run
    await createAppStore(store.namespace('app/counter/2')).put('junk', 1)
    await host.transform(request)
    expect(await written()).toBe(first)
    const next = createAppStore(store.namespace('app/counter/2'))
    expect(await next.get('count')).toBe(7)
    expect(await next.get('items/a')).toEqual({ x: 1 })
    expect(await next.get('scratch')).toBeUndefined()
    expect(await next.get('note')).toBe('kept')
    expect(await next.get('migratedAt')).toBe(1_700_000_000_000)
    const [date, rnd] = await next.get('ambient') as [number, number]
    expect(date).toBe(1_700_000_000_000)
    expect(await next.get('salt')).not.toBe(rnd)
    await host.transform({ ...request, seed: 43 })
    expect(await written()).not.toBe(first)
    // the old state was only read
    expect(await old.get('count')).toBe(7)
    expect(await host.invariants(app('counter-v2'), 'app/counter/2')).toEqual({ ok: true, failures: [] })
    await next.put('count', 'seven')
    const bad = await host.invariants(app('counter-v2'), 'app/counter/2')
    expect(bad.ok).toBe(false)
    expect(bad.failures.join('\n')).toMatch(/countIsNumber: count is string/)
    // the invariants checked in the TF's own worker: the same state, a report on what it wrote
    const checked = await host.transform({ ...request, invariants: true })
    expect(checked).toEqual({ invariants: { ok: true, failures: [] } })
    expect(await written()).toBe(first)
    await old.put('count', -3)
    const negative = await host.transform({ ...request, invariants: true })
    expect(negative.invariants?.ok).toBe(false)
    expect(negative.invariants?.failures.join('\n')).toMatch(/countNotNegative/)
    expect(a.invariants).toBeUndefined()
  })

  it('prepares the next version\'s worker: the TF, then the new version run in it, on the real clock', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    await call(host, 'incr')
    const old = host.status().threadId
    await host.prepare(app('counter-v2'))
    const prepared = host.status().prepared
    expect(prepared).toBeTypeOf('number')
    expect(prepared).not.toBe(old)
    // preparing the same bundle again keeps that worker, and an invariant check leaves it alone
    await host.prepare(app('counter-v2'))
    expect(host.status().prepared).toBe(prepared)
    expect((await host.invariants(app('counter-v2'), 'app/counter/1')).ok).toBe(true)
    expect(host.status().prepared).toBe(prepared)
    await host.quiesce()
    await host.unload()
    expect(host.status()).toMatchObject({ state: 'idle', prepared })
    const before = Date.now()
    // no invariants after it: the clock is restored at the TF's end, not by the invariant check
    await host.transform({ bundle: app('counter-v2'), from: 'app/counter/1', futureState: 'so/future/2', to: 'app/counter/2', now: 1, seed: 1 })
    expect(await createAppStore(store.namespace('app/counter/2')).get('count')).toBe(1)
    // the TF's worker waits to serve the version it transformed to
    expect(host.status().prepared).toBe(prepared)
    await host.load(V2)
    expect(host.status()).toMatchObject({ state: 'running', version: 2, threadId: prepared })
    expect(host.status().prepared).toBeUndefined()
    const v2 = { kind: 'current' as const, version: 2 }
    expect(await call(host, 'incr', [2], v2)).toBe(3)
    expect(await call(host, 'now', [], v2) as number).toBeGreaterThanOrEqual(before)
  })

  it('a prepared worker ends when another bundle loads, a TF fails in it, or the host stops; a bundle that cannot load prepares nothing', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    await host.prepare(app('counter-v2'))
    const prepared = host.status().prepared
    // a rollback loads the old version again: the prepared worker goes
    await host.load(V1)
    expect(host.status().prepared).toBeUndefined()
    expect(host.status().threadId).not.toBe(prepared)
    await expect(host.prepare(app('bad-api'))).rejects.toBeInstanceOf(AppApiMismatchError)
    await expect(host.prepare(await appFiles('bare-import'))).rejects.toBeInstanceOf(AppLoadError)
    expect(host.status().prepared).toBeUndefined()
    expect(await call(host, 'get')).toBe(0)
    // a TF that throws in the prepared worker: the worker ends with it, the next load starts afresh
    await createAppStore(store.namespace('app/tally/0')).put('items/a', 1)
    await host.prepare(app('tally-v1-throws'))
    const tally = host.status().prepared
    await expect(host.transform({ bundle: app('tally-v1-throws'), from: 'app/tally/0', futureState: 'so/future/1', to: 'app/tally/1', now: 1, seed: 1 }))
      .rejects.toMatchObject({ name: 'TransformFailedError' })
    expect(host.status().prepared).toBeUndefined()
    await host.load(V2)
    expect(host.status().threadId).not.toBe(tally)
    await host.prepare(app('counter-v1'))
    expect(host.status().prepared).toBeTypeOf('number')
    await host.stop()
    expect(host.status().prepared).toBeUndefined()
  })

  it('a TF\'s writes go to the main thread in batches; it reads its own writes, and a bad key fails it', async () => {
    const { host, store } = await fresh()
    const old = createAppStore(store.namespace('app/counter/1'))
    await old.put('n', 600)
    const request = { bundle: app('tf-batch'), from: 'app/counter/1', futureState: 'so/future/2', to: 'app/counter/2', now: 1, seed: 1 }
    await host.transform(request)
    const next = createAppStore(store.namespace('app/counter/2'))
    expect(await next.get('summary')).toEqual({ seen: [0, 599], afterDelete: null, listed: 300 })
    const keys: string[] = []
    for await (const [key] of next.entries('r/')) keys.push(key)
    expect(keys).toHaveLength(300)
    expect(await next.get('r/0')).toBeUndefined()
    expect(await next.get('r/599')).toBe(599)
    await old.put('bad', true)
    const failed = await host.transform(request).then(() => undefined, (err: Error) => err)
    expect(failed?.name).toBe('TransformFailedError')
    expect(failed?.message).toMatch(/InvalidStoreKeyError|invalid store key/)
  })

  it('refuses versions that cannot start, with typed errors, and stays loadable', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    await call(host, 'incr')
    await expect(host.load({ current: { class: 'counter', version: 2, bundle: app('bad-create') } })).rejects.toThrow(/missing configuration/)
    await expect(host.load({ current: { class: 'counter', version: 2, bundle: app('bad-create') } })).rejects.toBeInstanceOf(AppLoadError)
    expect(host.status().state).toBe('idle')
    await expect(call(host, 'get')).rejects.toBeInstanceOf(HostNotLoadedError)
    await expect(host.load({ current: { class: 'counter', version: 2, bundle: app('bad-api') } })).rejects.toBeInstanceOf(AppApiMismatchError)
    await expect(host.load({ current: { class: 'counter', version: 2, bundle: await appFiles('bare-import') } })).rejects.toBeInstanceOf(AppLoadError)
    // past links newest first, not overlapping, below the current version (a gap is a run of
    // versions that ran the current code, answered by the current object)
    await expect(host.load({ current: { class: 'counter', version: 2, bundle: app('counter-v2') }, past: [{ from: 1, to: 2, bundle: app('counter-v2') }] }))
      .rejects.toBeInstanceOf(InvalidHostSpecError)
    await expect(host.load({ current: { class: 'counter', version: 3, bundle: app('counter-v2') }, past: [{ from: 0, to: 0, bundle: app('counter-v2') }, { from: 1, to: 1, bundle: app('counter-v2') }] }))
      .rejects.toBeInstanceOf(InvalidHostSpecError)
    // roll back: the old version and its untouched state
    await host.load({ current: { class: 'counter', version: 1, bundle: await appFiles('counter-v1') } })
    expect(await call(host, 'get')).toBe(1)
    expect(await store.namespace('app/counter/2').has(new Key('/count'))).toBe(false)
  })

  it('quiesces (timers stop, objects reach an update point), checks health, and serves read-only observers', async () => {
    const { host, store } = await fresh()
    await host.load(V1)
    expect(await host.health()).toEqual({ ok: true, failures: [] })
    await call(host, 'incr')
    expect(await host.observe('count')).toBe(1)
    await expect(host.observe('tryWrite')).rejects.toBeInstanceOf(ReadOnlyStoreError)
    expect(await host.state().get('count')).toBe(1)
    const v1 = createAppStore(store.namespace(appNamespace('counter', 1)))
    await v1.put('sick', true)
    const sick = await host.health()
    expect(sick.ok).toBe(false)
    expect(sick.failures[0]).toMatch(/current@1: marked sick/)
    await call(host, 'startTicker', [10])
    await eventually(async () => ((await v1.get('ticks')) as number ?? 0) >= 1, 'ticks')
    await host.quiesce({ signal: AbortSignal.timeout(5000) })
    expect(await v1.get('quiesced')).toBe(true)
    const ticks = await v1.get('ticks')
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(await v1.get('ticks')).toBe(ticks)
    expect(host.status().quiesced).toBe(true)
    await host.resume()
    expect(host.status().quiesced).toBe(false)
    expect(await call(host, 'get')).toBe(1)
  })

  it('checks bundle API ranges', () => {
    expect(satisfies('1.0.0', '^1')).toBe(true)
    expect(satisfies('1.0.0', '>=1.0.0 <2')).toBe(true)
    expect(satisfies('1.0.0', '^2')).toBe(false)
    expect(satisfies('1.4.2', '~1.4')).toBe(true)
    expect(satisfies('1.5.0', '~1.4')).toBe(false)
    expect(satisfies('1.0.0', '^0.9 || 1.x')).toBe(true)
    expect(satisfies('0.2.5', '^0.2.3')).toBe(true)
    expect(satisfies('0.3.0', '^0.2.3')).toBe(false)
    expect(() => satisfies('1.0.0', 'banana')).toThrow(TypeError)
  })
})
