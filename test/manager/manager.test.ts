/**
 * The upgrade manager's state machine against a real store and a real manifest chain. The
 * runtime here is a small in-thread stand-in for the isolated host (our own component, not
 * libp2p): it keeps app state in the store's namespaces and runs TFs registered by bundle CID.
 */
import { createHash } from 'node:crypto'
import * as cbor from '@ipld/dag-cbor'
import { describe, it, expect, afterEach } from 'vitest'
import { genesisManifest, openManifestChain, type ManifestChain } from '../../src/manifest/index.ts'
import { AppLoadError, appNamespace, clearStore, type CheckReport, type TransformRequest } from '../../src/host/index.ts'
import {
  CrashPointError, NoReverseTransformError, UPGRADE_PHASES, createUpgradeManager,
  type CrashPoint, type FutureLink, type RunSpec, type UpgradeManager, type UpgradeRuntime
} from '../../src/manager/index.ts'
import { openStore, type MoltStore } from '../../src/state/index.ts'
import { eventually } from '../helpers.ts'
import { fakeBundle, makeGenesis, makeKeys, nextManifest, type TestKeys } from '../fixtures.ts'
import type { GenesisConfig, SignedManifest } from '../../src/manifest/index.ts'
import type { CID } from 'multiformats/cid'
import { Key } from 'interface-datastore'

type Tf = (old: number, random: number, now: number) => number

/** Behaviour of each test bundle, by CID string. */
interface Behaviour {
  tf?: Tf
  reverseTf?: Tf
  tfThrows?: boolean
  unhealthy?: boolean
  invariantFails?: boolean
  startFails?: boolean
  prepareFails?: boolean
}

class TestRuntime implements UpgradeRuntime {
  running: RunSpec | null = null
  runs = 0
  transforms = 0
  futures: FutureLink[] = []
  hangQuiesce = 0
  /** the runtime calls of upgrades, in order */
  order: string[] = []
  private readonly store: MoltStore
  private readonly behaviour: Map<string, Behaviour>

  constructor (store: MoltStore, behaviour: Map<string, Behaviour>) {
    this.store = store
    this.behaviour = behaviour
  }

  async prepare (bundle: CID): Promise<void> {
    this.order.push('prepare')
    if (this.behaviour.get(bundle.toString())?.prepareFails === true) throw new AppLoadError('cannot import the bundle')
  }

  async run (spec: RunSpec): Promise<void> {
    this.order.push('run')
    this.runs++
    if (this.behaviour.get(spec.current.bundle.toString())?.startFails === true) {
      this.running = null
      throw new Error('the new version crashed on start')
    }
    this.running = spec
    this.futures = [...spec.future]
  }

  async installFuture (link: FutureLink): Promise<void> { this.futures.push(link) }

  async quiesce (signal: AbortSignal): Promise<void> {
    this.order.push('quiesce')
    if (this.hangQuiesce > 0) {
      this.hangQuiesce--
      await new Promise((_resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
    }
  }

  async stop (): Promise<void> { this.order.push('stop'); this.running = null }

  async transform (request: TransformRequest): Promise<CheckReport | undefined> {
    this.order.push('transform')
    this.transforms++
    const b = this.behaviour.get(request.bundle.toString())
    if (request.reverse === true && b?.reverseTf == null) throw new AppLoadError('the bundle does not export reverseTransform')
    if (b?.tfThrows === true) throw new Error('TF bug')
    const old = this.store.namespace(request.from)
    const count = cbor.decode<number>(await old.get(new Key('/count')))
    let seed = request.seed
    const random = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed / 2 ** 32 }
    const next = ((request.reverse === true ? b?.reverseTf : b?.tf) ?? ((n) => n))(count, random(), request.now)
    // the runtime empties the TF's namespace first, as the host does
    const to = this.store.namespace(request.to)
    await clearStore(to)
    await to.put(new Key('/count'), cbor.encode(next))
    return request.invariants === true ? await this.invariants(request.bundle as CID) : undefined
  }

  async health (): Promise<CheckReport> {
    const b = this.behaviour.get(this.running?.current.bundle.toString() ?? '')
    return b?.unhealthy === true ? { ok: false, failures: ['unhealthy'] } : { ok: true, failures: [] }
  }

  async invariants (bundle: CID): Promise<CheckReport> {
    return this.behaviour.get(bundle.toString())?.invariantFails === true ? { ok: false, failures: ['count must be even'] } : { ok: true, failures: [] }
  }
}

async function digest (store: MoltStore, namespace: string): Promise<string> {
  const h = createHash('sha256')
  for await (const { key, value } of store.namespace(namespace).query({ orders: [(a, b) => a.key.toString() < b.key.toString() ? -1 : 1] })) {
    h.update(key.toString()).update(value)
  }
  return h.digest('hex')
}

interface World {
  keys: TestKeys
  genesis: GenesisConfig
  store: MoltStore
  chain: ManifestChain
  behaviour: Map<string, Behaviour>
  manifests: SignedManifest[]
}

async function world (from?: World): Promise<World> {
  const keys = from?.keys ?? await makeKeys()
  const genesis = from?.genesis ?? await makeGenesis(keys)
  const store = await openStore({ memory: true })
  const chain = await openManifestChain({ datastore: store.namespace('manifests'), genesis: await genesisManifest(genesis) })
  await store.namespace(appNamespace('app', 0)).put(new Key('/count'), cbor.encode(21))
  return { keys, genesis, store, chain, behaviour: new Map(), manifests: [] }
}

/** Appends version N upgrading `app` with a bundle of the given behaviour. */
async function publish (w: World, behaviour: Behaviour | null, patch: { fromVersion?: number } = {}): Promise<SignedManifest> {
  const prev = w.manifests.at(-1) ?? w.chain.genesis
  const label = `bundle-${prev.body.version + 1}-${Math.random()}`
  const bundle = await fakeBundle(label)
  const classUpgrades = behaviour == null
    ? [{ oldClass: 'other', newClass: 'other', bundle, bundleSize: 1, schedule: { name: 'eager' } }]
    : [{ oldClass: 'app', newClass: 'app', bundle, bundleSize: 1, schedule: { name: 'eager' }, ...patch }]
  if (behaviour != null) w.behaviour.set(bundle.toString(), behaviour)
  const m = await nextManifest(prev, w.keys.release.slice(0, 2), { classUpgrades })
  expect((await w.chain.consider(m)).kind).toBe('accepted')
  w.manifests.push(m)
  return m
}

function manager (w: World, runtime: TestRuntime, onCrashPoint?: (p: CrashPoint) => never, crashAt?: string): UpgradeManager {
  return createUpgradeManager({
    store: w.store,
    chain: w.chain,
    fetchBundle: async () => {},
    runtime
  }, { class: 'app', retryMs: 20, quiesceMs: 200, crashAt: crashAt ?? '', onCrashPoint, now: () => 1_700_000_000_000 })
}

describe('upgrade manager', () => {
  const managers: UpgradeManager[] = []
  afterEach(async () => { await Promise.all(managers.splice(0).map(async m => { await m.stop() })) })

  it('upgrades through every phase, installs the past-SO, and records the history', async () => {
    const w = await world()
    const runtime = new TestRuntime(w.store, w.behaviour)
    const m = manager(w, runtime)
    managers.push(m)
    const phases: string[] = []
    m.events.addEventListener('upgrade:phase', (e) => { phases.push(e.detail.phase) })
    await m.start()
    await publish(w, { tf: (n) => n * 2 })
    m.poke()
    await eventually(() => m.current.version === 1, 'at version 1')
    expect(phases).toEqual([...UPGRADE_PHASES])
    expect(cbor.decode(await w.store.namespace('app/app/1').get(new Key('/count')))).toBe(42)
    expect(cbor.decode(await w.store.namespace('app/app/0').get(new Key('/count')))).toBe(21)
    expect(runtime.running?.current.version).toBe(1)
    expect(runtime.running?.past).toEqual([{ from: 0, to: 0, bundle: w.manifests[0]!.body.classUpgrades[0]!.bundle }])
    expect(m.serving()).toMatchObject({ version: 1, past: [0], aliases: [], quiescing: false })
    expect((await m.history()).map(h => h.event)).toEqual(['upgraded'])
  })

  it('prepares the new version after the schedule\'s go and before the quiesce; a failed prepare is only logged', async () => {
    const w = await world()
    const runtime = new TestRuntime(w.store, w.behaviour)
    const m = manager(w, runtime)
    managers.push(m)
    await m.start()
    runtime.order = []
    await publish(w, { tf: (n) => n * 2 })
    m.poke()
    await eventually(() => m.current.version === 1, 'at version 1')
    expect(runtime.order).toEqual(['prepare', 'quiesce', 'stop', 'transform', 'run'])
    runtime.order = []
    await publish(w, { tf: (n) => n + 1, prepareFails: true })
    m.poke()
    await eventually(() => m.current.version === 2, 'at version 2')
    expect(runtime.order).toEqual(['prepare', 'quiesce', 'stop', 'transform', 'run'])
    expect(cbor.decode(await w.store.namespace('app/app/2').get(new Key('/count')))).toBe(43)
    expect((await m.history()).map(h => h.event)).toEqual(['upgraded', 'upgraded'])
  })

  it('advances the version number alone when no class upgrade names its class', async () => {
    const w = await world()
    const m = manager(w, new TestRuntime(w.store, w.behaviour))
    managers.push(m)
    await m.start()
    await publish(w, null)
    m.poke()
    await eventually(() => m.current.version === 1, 'advanced to 1')
    expect(m.serving()).toMatchObject({ version: 1, past: [0], aliases: [0] })
    expect((await m.history()).map(h => h.event)).toEqual(['advanced'])
  })

  it('after a crash at every named point, a restart reaches the same state digest', async () => {
    // the uninterrupted run
    const base = await world()
    const tf: Tf = (n, r, now) => n * 1000 + Math.floor(r * 1000) + (now % 7)
    const clean = manager(base, new TestRuntime(base.store, base.behaviour))
    managers.push(clean)
    await clean.start()
    await publish(base, { tf })
    clean.poke()
    await eventually(() => clean.current.version === 1, 'clean run at 1')
    const want = await digest(base.store, 'app/app/1')

    for (const phase of UPGRADE_PHASES) {
      for (const when of ['before', 'after'] as const) {
        const w = await world(base)
        // the same manifest bytes as the clean run, so the seed (derived from the manifest) agrees
        for (const m of base.manifests) { expect((await w.chain.consider(m)).kind).toBe('accepted'); w.manifests.push(m) }
        for (const [k, v] of base.behaviour) w.behaviour.set(k, v)
        let crashed = false
        const first = manager(w, new TestRuntime(w.store, w.behaviour), (point) => { crashed = true; throw new CrashPointError(point) }, `${phase}:${when}`)
        await first.start()
        await eventually(() => crashed, `crash at ${phase}:${when}`)
        await first.stop()
        const second = manager(w, new TestRuntime(w.store, w.behaviour))
        managers.push(second)
        await second.start()
        await eventually(() => second.current.version === 1 && second.phase == null, `restart after ${phase}:${when} reaches 1`)
        expect(await digest(w.store, 'app/app/1'), `${phase}:${when}`).toBe(want)
        expect(await digest(w.store, 'app/app/0')).toBe(await digest(base.store, 'app/app/0'))
      }
    }
  })

  for (const [what, behaviour, reason] of [
    ['a TF that throws', { tfThrows: true }, 'TransformFailedError'],
    ['a failing invariant', { invariantFails: true }, 'InvariantFailedError'],
    ['a failing health check', { unhealthy: true }, 'HealthCheckFailedError'],
    ['a version that crashes on start', { startFails: true }, 'StartFailedError']
  ] as const) {
    it(`${what} leaves the old version running with its state unchanged, reported, not retried`, async () => {
      const w = await world()
      const runtime = new TestRuntime(w.store, w.behaviour)
      const m = manager(w, runtime)
      managers.push(m)
      const rolledBack: string[] = []
      m.events.addEventListener('upgrade:rolled-back', (e) => { rolledBack.push(e.detail.error.name) })
      await m.start()
      const before = await digest(w.store, 'app/app/0')
      await publish(w, { tf: (n) => n + 1, ...behaviour })
      m.poke()
      await eventually(() => rolledBack.length === 1, 'rolled back')
      expect(rolledBack).toEqual([reason])
      expect(m.current.version).toBe(0)
      expect(runtime.running?.current.version).toBe(0)
      expect(m.serving().quiescing).toBe(false)
      expect(await digest(w.store, 'app/app/0')).toBe(before)
      expect(await digest(w.store, 'app/app/1')).toBe(createHash('sha256').digest('hex'))
      expect(m.badVersions()).toEqual([1])
      const transforms = runtime.transforms
      for (let i = 0; i < 5; i++) { m.poke(); await new Promise(resolve => setTimeout(resolve, 30)) }
      expect(runtime.transforms).toBe(transforms)
      expect((await m.history()).at(-1)).toMatchObject({ event: 'rolled-back', from: 0, to: 1, reason })
    })
  }

  it('a hung quiesce postpones the upgrade, which goes through once quiesce succeeds', async () => {
    const w = await world()
    const runtime = new TestRuntime(w.store, w.behaviour)
    runtime.hangQuiesce = 2
    const m = manager(w, runtime)
    managers.push(m)
    let postponed = 0
    m.events.addEventListener('upgrade:postponed', () => { postponed++ })
    await m.start()
    await publish(w, { tf: (n) => n })
    m.poke()
    await eventually(() => m.current.version === 1, 'upgraded after the postponements')
    expect(postponed).toBe(2)
    expect((await m.history()).map(h => h.event)).toEqual(['postponed', 'postponed', 'upgraded'])
  })

  it('fixes forward: a later version naming fromVersion takes the node past a broken one', async () => {
    const w = await world()
    const m = manager(w, new TestRuntime(w.store, w.behaviour))
    managers.push(m)
    await m.start()
    await publish(w, { tfThrows: true })
    m.poke()
    await eventually(() => m.badVersions().includes(1), 'version 1 marked bad')
    await publish(w, { tf: (n) => n + 100 }, { fromVersion: 0 })
    m.poke()
    await eventually(() => m.current.version === 2, 'at version 2')
    expect(cbor.decode(await w.store.namespace('app/app/2').get(new Key('/count')))).toBe(121)
  })
  it('after admission, goes back only through a declared reverse TF; without one the version keeps running', async () => {
    const w = await world()
    const runtime = new TestRuntime(w.store, w.behaviour)
    const m = manager(w, runtime)
    managers.push(m)
    await m.start()
    await publish(w, { tf: (n) => n * 2, reverseTf: (n) => n / 2 })
    m.poke()
    await eventually(() => m.current.version === 1, 'at version 1')
    // version 1 takes writes after its admission
    await w.store.namespace('app/app/1').put(new Key('/count'), cbor.encode(100))
    await m.reverse()
    expect(m.current.version).toBe(0)
    expect(runtime.running?.current.version).toBe(0)
    expect(cbor.decode(await w.store.namespace('app/app/0').get(new Key('/count')))).toBe(50)
    expect(m.badVersions()).toEqual([1])
    expect((await m.history()).map(h => h.event)).toEqual(['upgraded', 'reversed'])
    // not retried: the node stays at 0 until a manifest fixes forward
    for (let i = 0; i < 3; i++) { m.poke(); await new Promise(resolve => setTimeout(resolve, 30)) }
    expect(m.current.version).toBe(0)

    const w2 = await world()
    const runtime2 = new TestRuntime(w2.store, w2.behaviour)
    const m2 = manager(w2, runtime2)
    managers.push(m2)
    await m2.start()
    await publish(w2, { tf: (n) => n * 2 })
    m2.poke()
    await eventually(() => m2.current.version === 1, 'second world at version 1')
    const before = await digest(w2.store, 'app/app/1')
    await expect(m2.reverse()).rejects.toThrow(NoReverseTransformError)
    expect(m2.current.version).toBe(1)
    expect(runtime2.running?.current.version).toBe(1)
    expect(m2.serving().quiescing).toBe(false)
    expect(await digest(w2.store, 'app/app/1')).toBe(before)
  })
})
