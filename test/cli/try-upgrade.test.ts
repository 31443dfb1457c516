/**
 * `molt try-upgrade`: the dry run of an upgrade on a real store on disk, with no node running
 * (the closed store's files are copied) and with a node running (the node snapshots its own
 * store through its admin socket). Fixture bundles: a TF that works, one that throws, one whose
 * invariant fails, one that is not deterministic. The original store must be left untouched.
 */
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { buildBundle, readBundleDir } from '../../src/bundle/index.ts'
import { storeDigest } from '../../src/host/index.ts'
import { tryUpgradeOffline, DryRunInputError, type DryRunReport } from '../../src/manager/dry-run.ts'
import { startAdminServer, type AdminServer } from '../../src/node/admin.ts'
import { openStore, type MoltStore } from '../../src/state/index.ts'
import { startNode } from '../nodes.ts'
import { molt, tempDir, type Run } from './run.ts'
import type { GenesisConfig } from '../../src/manifest/index.ts'
import type { MoltNode } from '../../src/node/index.ts'

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/apps/${name}/`, import.meta.url))

/** sha256 of every file under `dir`, by relative path. */
async function hashTree (dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) {
      const path = join(entry.parentPath, entry.name)
      out[path.slice(dir.length)] = createHash('sha256').update(await readFile(path)).digest('hex')
    }
  }
  return out
}

const line = (run: Run, prefix: string): string => run.out.find(l => l.startsWith(prefix)) ?? ''

describe('molt try-upgrade', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  let genesis: GenesisConfig
  let data: string
  let storeDir: string
  let goodCid = ''
  const ITEMS = [3, 5, 8, 13]

  /** Starts the node on `data`, running class `tally` (on a store the test opened, so it can read it too). */
  async function start (): Promise<{ node: MoltNode, store: MoltStore, admin: AdminServer, stop(): Promise<void> }> {
    const store = await openStore({ path: data })
    let node: MoltNode | undefined
    let admin: AdminServer | undefined
    try {
      node = await startNode(genesis, { store, pack: [fixture('tally-v0')], app: { class: 'tally' } })
      admin = await startAdminServer(node, { dataDir: data })
    } catch (err) {
      await node?.stop()
      await store.close()
      throw err
    }
    const n = node
    const a = admin
    return {
      node: n,
      store,
      admin: a,
      async stop () {
        await a.close()
        await n.stop()
        await store.close()
      }
    }
  }

  beforeAll(async () => {
    dir = await tempDir()
    data = join(dir.path, 'data')
    storeDir = join(data, 'store')
    const v0 = await buildBundle(await readBundleDir(fixture('tally-v0')))
    const key = await generateKeyPair('Ed25519')
    const k = publicKeyToProtobuf(key.publicKey)
    genesis = {
      system: 'trytest',
      policy: { root: { keys: [k], threshold: 1 }, release: { keys: [k], threshold: 1 } },
      classes: [{ name: 'tally', bundle: v0.root, bundleSize: v0.size }],
      createdAt: 1_700_000_000_000
    }
    // a node runs version 0, takes some writes, holds the good v1 bundle, and stops
    const running = await start()
    try {
      for (const value of ITEMS) {
        await running.node.app!.host.invoke({ target: { kind: 'current', version: 0 }, method: 'add', args: [value], peer: 'test', caller: { version: 0, class: 'tally' } })
      }
      goodCid = (await running.node.bundles.pack(fixture('tally-v1'))).cid.toString()
    } finally {
      await running.stop()
    }
  })
  afterAll(async () => { await dir?.remove() })

  describe('with no node running', () => {
    let before: Record<string, string>
    beforeAll(async () => { before = await hashTree(storeDir) })
    // every test leaves every file of the store byte-identical
    const untouched = async (): Promise<void> => { expect(await hashTree(storeDir)).toEqual(before) }

    it('runs a working TF twice, checks the invariants and reports the digest', async () => {
      const run = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1'), '--now', '1700000000000', '--seed', '7')
      expect(run.err).toEqual([])
      expect(run.code).toBe(0)
      expect(line(run, 'upgrade')).toBe('upgrade    tally@0 → tally@1')
      expect(line(run, 'snapshot')).toContain('a copy of the closed store: 5 entries of state, 0 entries of future-SO state')
      expect(line(run, 'runs')).toBe('runs       agree')
      expect(line(run, 'invariants')).toMatch(/^invariants hold/)
      expect(line(run, 'result')).toBe('result     ok')
      const digests = run.out.filter(l => l.startsWith('run ')).map(l => /digest ([0-9a-f]{64})/.exec(l)?.[1])
      expect(digests).toHaveLength(2)
      expect(digests[0]).toBe(digests[1])
      await untouched()

      // the same inputs give the same digest; JSON carries the whole report
      const json = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1'), '--now', '1700000000000', '--seed', '7', '--json')
      expect(json.code).toBe(0)
      const report = JSON.parse(json.out.join('\n')) as DryRunReport
      expect(report).toMatchObject({ ok: true, agree: true, snapshot: 'copy', class: 'tally', fromVersion: 0, toVersion: 1, now: 1_700_000_000_000, seed: 7, failures: [] })
      expect(report.digests).toEqual([digests[0], digests[0]])
      expect(report.bundle).toBe(goodCid)
      expect(report.timings.transformMs).toHaveLength(2)
      expect(typeof report.ms).toBe('number')
      await untouched()
    })

    it('reads a bundle given by CID from the closed store', async () => {
      const run = await molt('try-upgrade', '--data', data, '--bundle', goodCid, '--json')
      expect(run.code).toBe(0)
      expect((JSON.parse(run.out.join('\n')) as DryRunReport).bundle).toBe(goodCid)
      await untouched()
    })

    it('reports a TF that throws', async () => {
      const run = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1-throws'))
      expect(run.code).toBe(1)
      expect(run.err).toHaveLength(1)
      expect(run.err[0]).toMatch(/^molt: try-upgrade: the upgrade would fail: TF run 1 failed: .*cannot migrate 4 items/)
      expect(line(run, 'run 1')).toContain('failed')
      expect(line(run, 'result')).toBe('result     FAILED')
      expect(run.out.some(l => l.startsWith('invariants'))).toBe(false)
      await untouched()
    })

    it('reports an invariant that fails', async () => {
      const run = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1-bad-invariant'), '--json')
      expect(run.code).toBe(1)
      const report = JSON.parse(run.out.join('\n')) as DryRunReport
      expect(report.agree).toBe(true)
      expect(report.invariants?.ok).toBe(false)
      expect(report.failures.join('\n')).toContain('countKept')
      expect(run.err[0]).toMatch(/^molt: try-upgrade: the upgrade would fail: invariant .*countKept/)
      await untouched()
    })

    it('reports a TF whose two runs disagree', async () => {
      const run = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1-nondeterministic'))
      expect(run.code).toBe(1)
      expect(line(run, 'runs')).toBe('runs       DISAGREE')
      const digests = run.out.filter(l => l.startsWith('run ')).map(l => /digest ([0-9a-f]{64})/.exec(l)?.[1])
      expect(digests[0]).not.toBe(digests[1])
      expect(run.err[0]).toMatch(/the two TF runs disagree/)
      await untouched()
    })

    it('refuses bad arguments in one line, and a directory with no store', async () => {
      const missing = await molt('try-upgrade', '--data', data)
      expect(missing.code).toBe(2)
      expect(missing.err).toEqual(['molt: try-upgrade: --bundle is required (a bundle directory or CID) (see molt try-upgrade --help)'])
      const notCid = await molt('try-upgrade', '--data', data, '--bundle', 'no-such-dir')
      expect(notCid.code).toBe(2)
      expect(notCid.err[0]).toMatch(/^molt: try-upgrade: --bundle \(neither a directory nor a CID\)/)
      const order = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1'), '--from-version', '3', '--to-version', '2')
      expect(order.code).toBe(2)
      const empty = await molt('try-upgrade', '--data', join(dir.path, 'nothing'), '--bundle', fixture('tally-v1'))
      expect(empty.code).toBe(1)
      expect(empty.err[0]).toMatch(/holds no molt store/)
      await expect(tryUpgradeOffline(join(dir.path, 'nothing'), { bundle: { dir: fixture('tally-v1') } })).rejects.toBeInstanceOf(DryRunInputError)
      expect((await molt('try-upgrade', '--help')).out[0]).toMatch(/^Usage: molt try-upgrade/)
      await untouched()
    })
  })

  describe('with a node running', () => {
    it('asks the node, which snapshots its live store and leaves its state untouched', async () => {
      const running = await start()
      try {
        const state = running.store.namespace('app/tally/0')
        const before = await storeDigest(state)
        expect(running.node.status().app).toMatchObject({ class: 'tally', version: 0 })

        const good = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1'), '--json')
        expect(good.err).toEqual([])
        expect(good.code).toBe(0)
        const report = JSON.parse(good.out.join('\n')) as DryRunReport
        expect(report).toMatchObject({ ok: true, agree: true, snapshot: 'live', entries: { state: ITEMS.length + 1, futureState: 0 } })

        const byCid = await molt('try-upgrade', '--data', data, '--bundle', goodCid)
        expect(byCid.code).toBe(0)

        const bad = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1-bad-invariant'))
        expect(bad.code).toBe(1)
        expect(bad.err[0]).toMatch(/invariant .*countKept/)
        const throws = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1-throws'))
        expect(throws.code).toBe(1)
        expect(throws.err[0]).toMatch(/TF run 1 failed/)
        const random = await molt('try-upgrade', '--data', data, '--bundle', fixture('tally-v1-nondeterministic'))
        expect(random.code).toBe(1)
        expect(random.err[0]).toMatch(/disagree/)

        // a bundle the node does not hold is one line, and the node keeps running
        const unknown = await molt('try-upgrade', '--data', data, '--bundle', 'bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy')
        expect(unknown.code).toBe(1)
        expect(unknown.err[0]).toMatch(/^molt: try-upgrade: .*not completely held/)

        expect(await storeDigest(state)).toBe(before)
        // the app still serves, from the same state
        expect(await running.node.app!.host.invoke({ target: { kind: 'current', version: 0 }, method: 'count', args: [], peer: 'test', caller: { version: 0, class: 'tally' } })).toBe(ITEMS.length)
        // nothing of the dry run was left in the node's store
        for (const ns of ['app/tally/1', 'dry-run/second', 'so/future/1']) {
          const keys = []
          for await (const key of running.store.namespace(ns).queryKeys({})) keys.push(key)
          expect(keys).toEqual([])
        }
      } finally {
        await running.stop()
      }
    })
  })
})
