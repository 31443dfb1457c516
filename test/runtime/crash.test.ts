/**
 * Crash safety on real processes (DESIGN decision 8): for every named crash point of the upgrade
 * manager, a node process killed with SIGKILL there restarts from its data directory and reaches
 * the same state digest as an uninterrupted upgrade.
 *
 * Each run is a single-node system in its own process (test/runtime/node-process.ts) on its own
 * LevelDB data directory, seeded identically, which publishes the same signed manifest bytes.
 * The TF (fixture ledger-v1) uses the upgrade's clock and random source. The restarted process is
 * given a different clock than the crashed one, so a restart that took a fresh clock instead of
 * the attempt's persisted one would write a different digest.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as cbor from '@ipld/dag-cbor'
import { Key } from 'interface-datastore'
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { buildBundle } from '../../src/bundle/index.ts'
import { appNamespace, createAppStore, futureSoNamespace, storeDigest } from '../../src/host/index.ts'
import { UPGRADE_PHASES, type HistoryEntry } from '../../src/manager/index.ts'
import { createManifest, encodeSignedManifest, genesisManifest, genesisToJSON, signManifest, type GenesisConfig } from '../../src/manifest/index.ts'
import { openStore } from '../../src/state/index.ts'
import { makeKeys, policyOf } from '../fixtures.ts'
import { APPS } from './apps.ts'
import { TS_EXEC_ARGV } from '../helpers.ts'

const NODE_PROCESS = fileURLToPath(new URL('./node-process.ts', import.meta.url))
const CLOCK = 1_700_000_000_000
/** the restarted process's clock: never to be used by a resumed attempt */
const OTHER_CLOCK = 1_900_000_000_000
/** child processes at once: each is a node with its worker threads, on a 2-core machine */
const CONCURRENCY = 3

interface Outcome {
  /** how the process ended */
  code: number | null
  signal: NodeJS.Signals | null
  /** its stdout, one JSON value per line */
  lines: Array<Record<string, unknown>>
  stderr: string
}

interface Result {
  v1: string
  v0: string
  future: string
  migratedAt: unknown
  history: string[]
  attempt: unknown
  lineage: number[]
}

const children = new Set<ChildProcess>()

/** Runs the node process to its end (a SIGKILL at the crash point, or a clean exit). */
async function runNode (configPath: string, crashAt?: string): Promise<Outcome> {
  const env = { ...process.env }
  delete env.MOLT_CRASH_AT
  if (crashAt != null) env.MOLT_CRASH_AT = crashAt
  const child = spawn(process.execPath, [...TS_EXEC_ARGV, NODE_PROCESS, configPath], { env, stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  let stderr = ''
  child.stdout!.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString() })
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.on('exit', (c, s) => { resolve([c, s]) })
  })
  children.delete(child)
  const lines = out.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as Record<string, unknown>)
  return { code, signal, lines, stderr }
}

/** What a data directory holds after the upgrade (read once no process has it open). */
async function inspect (dataDir: string): Promise<Result> {
  const store = await openStore({ path: dataDir })
  try {
    const v1 = store.namespace(appNamespace('ledger', 1))
    const history: string[] = []
    for await (const { value } of store.namespace('manager').query({ prefix: '/history/' })) {
      history.push(cbor.decode<HistoryEntry>(value).event)
    }
    const record = cbor.decode<{ attempt: unknown, lineage: Array<{ version: number }> }>(await store.namespace('manager').get(new Key('/record')))
    return {
      v1: await storeDigest(v1),
      v0: await storeDigest(store.namespace(appNamespace('ledger', 0))),
      future: await storeDigest(store.namespace(futureSoNamespace(1))),
      migratedAt: await createAppStore(v1, { readOnly: true }).get('migratedAt'),
      history,
      attempt: record.attempt,
      lineage: record.lineage.map(i => i.version)
    }
  } finally {
    await store.close()
  }
}

/** A limit on how many runs go at once. */
function limiter (n: number): <T>(work: () => Promise<T>) => Promise<T> {
  let active = 0
  const queue: Array<() => void> = []
  return async (work) => {
    while (active >= n) await new Promise<void>(resolve => { queue.push(resolve) })
    active++
    try {
      return await work()
    } finally {
      active--
      queue.shift()?.()
    }
  }
}

describe('crash safety of the upgrade on real node processes', () => {
  let root: string
  let genesisPath: string
  let manifestPath: string
  let reference: Result
  const limit = limiter(CONCURRENCY)

  /** A seeded data directory and a config for the node process; `clock` is the manager's clock. */
  async function prepare (name: string): Promise<{ dataDir: string, config: (clock: number) => Promise<string> }> {
    const dataDir = join(root, name)
    const store = await openStore({ path: dataDir })
    const v0 = createAppStore(store.namespace(appNamespace('ledger', 0)))
    for (const [i, text] of ['alpha', 'beta', 'gamma', 'delta', 'epsilon'].entries()) {
      await v0.put(`entries/${String(i).padStart(6, '0')}`, text)
    }
    await v0.put('next', 5)
    // the new version's independent state, kept by its future-SO, which the TF reads
    await createAppStore(store.namespace(futureSoNamespace(1))).put('note', 'kept by the future-SO')
    await store.close()
    return {
      dataDir,
      config: async (clock) => {
        const path = join(root, `${name}-${clock}.json`)
        await writeFile(path, JSON.stringify({
          genesis: genesisPath,
          manifest: manifestPath,
          dataDir,
          pack: [join(APPS, 'ledger-v0'), join(APPS, 'ledger-v1')],
          class: 'ledger',
          clock,
          target: 1
        }))
        return path
      }
    }
  }

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'molt-crash-'))
    const keys = await makeKeys()
    const v0 = await buildBundle(new Map([['index.js', await readFile(join(APPS, 'ledger-v0', 'index.js'))]]))
    const v1 = await buildBundle(new Map([['index.js', await readFile(join(APPS, 'ledger-v1', 'index.js'))]]))
    const genesis: GenesisConfig = { system: 'crash', policy: policyOf(keys), classes: [{ name: 'ledger', bundle: v0.root, bundleSize: v0.size }], createdAt: 1 }
    genesisPath = join(root, 'genesis.json')
    await writeFile(genesisPath, JSON.stringify(genesisToJSON(genesis)))
    let manifest = await createManifest({
      system: 'crash',
      version: 1,
      previous: (await genesisManifest(genesis)).cid,
      classUpgrades: [{ oldClass: 'ledger', newClass: 'ledger', bundle: v1.root, bundleSize: v1.size, schedule: { name: 'eager' } }],
      createdAt: 2
    })
    for (const k of keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
    manifestPath = join(root, 'manifest.bin')
    await writeFile(manifestPath, encodeSignedManifest(manifest))

    // the uninterrupted upgrade
    const run = await prepare('reference')
    const outcome = await runNode(await run.config(CLOCK))
    expect(outcome, outcome.stderr).toMatchObject({ code: 0, signal: null })
    expect(outcome.lines.filter(l => 'phase' in l).map(l => l.phase)).toEqual([...UPGRADE_PHASES])
    reference = await inspect(run.dataDir)
    expect(reference).toMatchObject({ migratedAt: CLOCK, history: ['upgraded'], attempt: null, lineage: [0, 1] })
  }, 120_000)

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await rm(root, { recursive: true, force: true })
  })

  const points = UPGRADE_PHASES.flatMap(phase => (['before', 'after'] as const).map(when => `${phase}:${when}`))

  it.concurrent.each(points)('SIGKILL at %s, then a restart from the data dir, gives the reference digest', async (point) => {
    await limit(async () => {
      const run = await prepare(point.replace(':', '-'))
      const crashed = await runNode(await run.config(CLOCK), point)
      // killed by the crash point itself, after the phase it names began
      expect({ code: crashed.code, signal: crashed.signal }, crashed.stderr).toEqual({ code: null, signal: 'SIGKILL' })
      expect(crashed.lines.filter(l => 'phase' in l).map(l => l.phase)).toContain(point.split(':')[0])
      expect(crashed.lines.some(l => 'done' in l)).toBe(false)
      // what the killed node wrote of its bundles is in its data directory, not left in the temporary one
      expect(await readdir(join(run.dataDir, 'host'))).not.toHaveLength(0)

      // the restart resumes (or, killed after admission, just runs) the upgrade with the attempt's clock
      const restarted = await runNode(await run.config(OTHER_CLOCK))
      expect({ code: restarted.code, signal: restarted.signal }, restarted.stderr).toEqual({ code: 0, signal: null })

      const result = await inspect(run.dataDir)
      expect(result.v1, `state digest after ${point}`).toBe(reference.v1)
      expect(result).toEqual(reference)
    })
  }, 150_000)
})
