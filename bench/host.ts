/**
 * `npm run bench -- host [--calls 5000] [--warmup 1000]`
 *
 * The cost of isolation (decision 7): `crossing` is a round trip main thread → worker → app
 * method → back through `host.invoke` (a null method, `echo([])`, on the current object);
 * `direct` is the same method of the same bundle created and called in this thread. The two
 * alternate call by call, so both see the same machine load. `storeGet` is an app store read
 * from inside the worker (a `get` method: one invoke crossing plus one store crossing).
 */
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { openStore } from '../src/state/index.ts'
import { createAppStore, createHost, type AppObject, type CallContext, type ClassModule, type HostApi } from '../src/host/index.ts'
import type { Benchmark } from './run.ts'

function quantile (sorted: number[], q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i] as number
}

function stats (samplesNs: number[]): { p50: number, p95: number, p99: number } {
  const us = samplesNs.map(ns => ns / 1000).sort((a, b) => a - b)
  const round = (x: number): number => Math.round(x * 10) / 10
  return { p50: round(quantile(us, 0.5)), p95: round(quantile(us, 0.95)), p99: round(quantile(us, 0.99)) }
}

function intFlag (flags: Record<string, string | boolean | undefined>, name: string, fallback: number): number {
  const raw = flags[name]
  if (raw == null) return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name}: expected a positive integer, got ${String(raw)}`)
  return n
}

const bench: Benchmark = async (flags) => {
  const calls = intFlag(flags, 'calls', 5000)
  const warmup = intFlag(flags, 'warmup', 1000)
  const dir = fileURLToPath(new URL('../test/fixtures/apps/counter-v1/', import.meta.url))
  const store = await openStore({ memory: true })
  const host = createHost({ store, self: { peerId: 'bench' } })
  await host.load({ current: { class: 'counter', version: 1, bundle: { dir } } })

  // the same bundle, in this thread
  const mod = await import(pathToFileURL(join(dir, 'index.js')).href) as ClassModule
  const hostApi: HostApi = {
    self: { peerId: 'bench', class: 'counter', version: 1 },
    call: async () => null,
    peers: () => [],
    timers: { setTimeout: () => 0, setInterval: () => 0, clear: () => {} },
    store: createAppStore(store.namespace('bench-direct')),
    log: () => {}
  }
  const object: AppObject = await mod.create(hostApi)
  const echo = object.methods.echo!
  const context: CallContext = { peer: 'bench', caller: { version: 1, class: 'counter' }, signal: new AbortController().signal }
  const request = { target: { kind: 'current' as const, version: 1 }, method: 'echo', args: [], peer: 'bench', caller: { version: 1, class: 'counter' } }
  const getRequest = { ...request, method: 'get' }

  const crossing: number[] = []
  const direct: number[] = []
  const storeGet: number[] = []
  for (let i = 0; i < warmup + calls; i++) {
    let t = process.hrtime.bigint()
    await host.invoke(request)
    const c = Number(process.hrtime.bigint() - t)
    t = process.hrtime.bigint()
    await echo.call(object, [], context)
    const d = Number(process.hrtime.bigint() - t)
    t = process.hrtime.bigint()
    await host.invoke(getRequest)
    const g = Number(process.hrtime.bigint() - t)
    if (i >= warmup) {
      crossing.push(c)
      direct.push(d)
      storeGet.push(g)
    }
  }
  await host.stop()
  await store.close()
  const cs = stats(crossing)
  const ds = stats(direct)
  const gs = stats(storeGet)
  return {
    calls,
    crossing_p50_us: cs.p50,
    crossing_p95_us: cs.p95,
    crossing_p99_us: cs.p99,
    direct_p50_us: ds.p50,
    direct_p95_us: ds.p95,
    store_get_p50_us: gs.p50,
    store_get_p95_us: gs.p95,
    target_crossing_p50_us: 100
  }
}

export default bench
