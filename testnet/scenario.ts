/**
 * One testnet run, stage by stage: start the members, wait for the Chord ring to stabilise, run
 * the client workload through a steady-state window, publish the next version signed by the
 * testnet's release key through a random node (or, `--control`, restart the nodes one at a time
 * instead), inject the faults, wait until every member runs the target, let the workload reach
 * its op count, stop it, let the system quiesce, read every written key back, and summarise.
 *
 * @packageDocumentation
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { logger } from '@libp2p/logger'
import { toString } from 'uint8arrays/to-string'
import { encodeSignedManifest, genesisManifest, genesisToJSON, openStore, type MoltStore, type SignedManifest } from '../src/index.ts'
import { untilAborted } from '../src/cli/node.ts'
import { arcGroups, loadChord, ringState, versionLabel, type NodeInfo, type RingState } from './chord.ts'
import { ChordExampleError, InterruptedError, MemberFailedError, StageTimeoutError } from './errors.ts'
import { buildMemberEntry, LocalMember, ProcessMember, type MemberEntry, type MemberHandle } from './fleet.ts'
import { Recorder } from './recorder.ts'
import { prepare, upgradeManifest, type TestnetSetup } from './setup.ts'
import { summarise, type Summary } from './summary.ts'
import { checkWrites, keysOf, type WriteCheck } from './verify.ts'
import { seeded, sleep } from './workload.ts'
import { startView, type View } from './view.ts'
import type { TestnetOptions } from './args.ts'
import type { MemberConfig, ReadBack, WorkloadPlan, WorkloadRecord } from './ipc.ts'

const log = logger('molt:testnet')

/** Where a run writes. */
export interface TestnetIO {
  /** a result line (stdout) */
  out(line: string): void
  /** a progress line (stderr) */
  err(line: string): void
  /** raw text to the terminal, for the live view */
  write(text: string): void
  /** stdout is a terminal that takes ANSI redraws */
  tty: boolean
  columns: number
  /** aborting it ends the run (members stopped, nothing reported) */
  signal?: AbortSignal
}

/**
 * How many times slower the Chord example's background jobs run (its build's `pace`): 1 for
 * processes; in-process, one more for every 25 nodes, since all of them share one event loop (a
 * 100-node ring at full pace asks about a thousand maintenance calls a second of it).
 */
export function chordPace (o: { inProcess: boolean, nodes: number }): number {
  return o.inProcess ? Math.max(1, Math.ceil(o.nodes / 25)) : 1
}

/** Tuning that the flags do not expose. */
export const TUNING = {
  /** replica-group (arc) size for one-replica-at-a-time */
  arc: 4,
  /** own keys per client, shared keys */
  keysPerClient: 48,
  sharedKeys: 4,
  lanes: 2,
  ratePerLane: 40,
  /** workload before the steady-state window, once every client knows every node */
  warmupMs: 5000,
  /** longest wait for the clients to know every node (per node in the ring) */
  clientViewMsPerNode: 1000,
  opDeadlineMs: 10_000,
  /** members started at once */
  startBatch: 4,
  startBatchInProcess: 5,
  /** peers each member dials at start */
  bootstrapPeers: 3,
  /** nodes each member connects to once all are up */
  meshPeers: 20,
  /** the same in-process, where every connection's upkeep (pings, gossip, identify) shares one event loop */
  meshPeersInProcess: 8,
  statusMs: 1000,
  sampleMs: 500,
  /**
   * Status records are published at once on every change; the period only paces re-announces
   * and the pulls of counted peers outside the group (class-order's roster): short enough that
   * clients see the last node's upgrade within seconds, long enough to cost little.
   */
  fleet: { announceMs: 6000, evalEveryMs: 500 },
  /** the bundle service's `announcers` (its default) */
  announcers: 4,
  /**
   * The same in-process: one event loop answers every node's DHT queries, and a provide is a walk
   * plus twenty records, each answer reading twenty peers from the peer store (`FIND_NODE`
   * answers were 10 % of a 100-node rollout's loop with 4). With 8 connections each, about one
   * node in sixteen announces: ~6 provider records per bundle for 100 nodes instead of ~25.
   */
  announcersInProcess: 1,
  retryMs: 500,
  /** partition held for */
  partitionMs: 10_000,
  /** from the kill to the restart */
  killDownMs: 2000,
  /** workload tail after every member upgraded */
  tailMs: 3000,
  /** settle time after the workload stopped, before the read-back */
  settleMs: 3000,
  settleAfterPartitionMs: 10_000,
  /** gap between two restarts of --control */
  controlGapMs: 1000
}

/** What a run returns. */
export interface TestnetResult {
  summary: Summary
  /** every acceptance check passed */
  passed: boolean
}

/** Resolves when `check` is true; polls every `everyMs`; throws at the deadline or abort. */
async function until (check: () => boolean | Promise<boolean>, what: string, timeoutMs: number, signal: AbortSignal, everyMs = 250): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (true) {
    if (signal.aborted) throw new InterruptedError(`interrupted while waiting until ${what}`)
    if (await check()) return
    if (Date.now() > deadline) throw new StageTimeoutError(`timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting until ${what}`)
    await sleep(everyMs, signal).catch(() => {})
  }
}

/** Fisher–Yates with a seeded source. */
function shuffle<T> (items: readonly T[], random: () => number): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j] as T, out[i] as T]
  }
  return out
}

/** The peer ids of the members that have one (that have been ready once). */
function peerIds (members: readonly MemberHandle[]): string[] {
  return members.map(m => m.peerId).filter((p): p is string => p != null)
}

/** A run. */
class Testnet {
  readonly rec = new Recorder()
  readonly members: MemberHandle[] = []
  private view: View | undefined
  private setup: TestnetSetup | undefined
  private entry: MemberEntry | undefined
  private shared: MoltStore | undefined
  private readonly random: () => number
  private sampler: ReturnType<typeof setInterval> | undefined
  private ring: RingState | undefined
  private readonly signal: AbortSignal
  private head: SignedManifest | undefined
  /** the nodes' last `info` answers, written to `<data>/ring.json` after a failure */
  private lastRing: { at: string, ring: RingState, infos: NodeInfo[] } | undefined

  private readonly options: TestnetOptions
  private readonly io: TestnetIO

  constructor (options: TestnetOptions, io: TestnetIO) {
    this.options = options
    this.io = io
    this.random = seeded(options.seed)
    const timeout = AbortSignal.timeout(options.timeoutMs)
    this.signal = io.signal != null ? AbortSignal.any([io.signal, timeout]) : timeout
  }

  get nodes (): MemberHandle[] { return this.members.filter(m => m.role === 'node') }
  get clients (): MemberHandle[] { return this.members.filter(m => m.role === 'client') }

  private stage (text: string): void {
    log(text)
    this.view?.stage(text)
  }

  async run (): Promise<TestnetResult> {
    const o = this.options
    const target = o.control ? 0 : o.to - 1
    this.rec.target = target
    try {
      this.view = startView(this.rec, {
        nodes: o.nodes,
        clients: o.clients,
        schedule: o.control ? 'none (--control: restarts only)' : `${o.schedule}${Object.keys(o.params).length > 0 ? ' ' + JSON.stringify(o.params) : ''}`,
        target,
        mode: o.inProcess ? 'in-process, memory transport' : 'processes, loopback tcp'
      }, {
        tty: this.io.tty && !o.json,
        columns: this.io.columns,
        write: (t) => { this.io.write(t) },
        line: (l) => { this.io.err(l) }
      })
      this.stage('building the Chord example')
      const pace = chordPace(o)
      const chord = await loadChord(pace)
      if (pace > 1) this.rec.note(`the Chord example's background jobs run ${pace}× slower (${o.nodes} nodes share one event loop)`)
      const setup = this.setup = await prepare(o.dataDir, chord)
      this.head = await genesisManifest(setup.genesis)
      if (o.to === 3 && !setup.bundles.node.has(3)) {
        throw new ChordExampleError('--to 3: the Chord example has no v3')
      }
      this.stage('compiling the members')
      this.entry = await buildMemberEntry()
      if (o.inProcess) {
        this.shared = await openStore({ path: join(o.dataDir, 'shared') })
      }
      this.sampler = setInterval(() => { this.rec.sample() }, TUNING.sampleMs)
      this.sampler.unref()

      await this.startAll()
      this.rec.marks.ready = Date.now()
      await this.waitForRing('the ring is stable', 60_000 + 3000 * o.nodes)
      this.rec.marks.ringStable = Date.now()
      await this.assignGroups()
      // the groups make every node pull its arc and every client the whole roster: new
      // connections and a burst of status records, set-up rather than workload (in-process, the
      // one loop stalled for up to 15 s while the clients' first ops waited)
      await this.waitForFleetViews(Math.max(20_000, TUNING.clientViewMsPerNode * o.nodes))

      this.stage(`workload: ${o.clients} client(s) warming up`)
      await this.startWorkload()
      // the clients' member lists fill up first: not part of the steady state (in a ring of a
      // hundred, a client that knows a few members routes most ops over several slow hops)
      await this.waitForClientViews(Math.max(20_000, TUNING.clientViewMsPerNode * o.nodes))
      if (!o.control) await this.prepack()
      await sleep(Math.min(TUNING.warmupMs, o.steadyMs), this.signal)
      this.stage(`workload: steady state for ${(o.steadyMs / 1000).toFixed(0)} s`)
      this.rec.marks.steadyStart = Date.now()
      await sleep(o.steadyMs, this.signal)

      if (o.control) {
        await this.controlRestarts()
      } else {
        for (let v = 1; v <= target; v++) {
          await this.publish(v, v === 1)
          await this.waitUpgraded(v)
        }
      }

      this.stage('workload: running until its op count')
      const tailUntil = Date.now() + TUNING.tailMs
      await until(() => this.opCount() >= o.ops && Date.now() >= tailUntil, `the clients made ${o.ops} ops`, Math.max(120_000, o.ops * 20), this.signal, 500)
      const records = await this.stopWorkload()

      this.stage('quiescing')
      await this.waitForRing('the ring is stable again', 60_000).catch((err: Error) => { this.rec.note(`quiesce: ${err.message}`) })
      await sleep(o.faults.partition ? TUNING.settleAfterPartitionMs : TUNING.settleMs, this.signal)

      this.stage('reading every written key back')
      const check = await this.verify(records)
      this.rec.marks.verified = Date.now()
      this.rec.marks.end = Date.now()
      const summary = summarise({ options: o, rec: this.rec, check, setup, records, target })
      return { summary, passed: summary.checks.passed }
    } catch (err) {
      await this.dumpState(err as Error)
      if (this.signal.aborted && this.io.signal?.aborted !== true) {
        throw new StageTimeoutError(`the run took longer than --timeout ${o.timeoutMs / 1000} s`, { cause: err })
      }
      throw err
    } finally {
      this.view?.stop()
      if (this.sampler != null) clearInterval(this.sampler)
    }
  }

  /**
   * After a failure: every member's last status and events go to `<data>/members.json`, the
   * nodes' last `info` answers to `<data>/ring.json`, and the members not at the target are
   * listed on stderr.
   */
  private async dumpState (err: Error): Promise<void> {
    if (this.lastRing != null) {
      await writeFile(join(this.options.dataDir, 'ring.json'), JSON.stringify(this.lastRing, null, 2)).catch(() => {})
    }
    const tracks = [...this.rec.members.values()]
    const views = Object.fromEntries(await Promise.all(this.members.filter(m => m.alive).map(async m => [m.name, await m.request('view', {}, 5000).catch(() => null)] as const)))
    await writeFile(join(this.options.dataDir, 'members.json'), JSON.stringify({ error: `${err.name}: ${err.message}`, marks: this.rec.marks, members: tracks.map(t => ({ ...t, manifestAt: [...t.manifestAt], reachedAt: [...t.reachedAt], view: views[t.name] ?? null })) }, null, 2)).catch(() => {})
    this.view?.stop()
    const behind = tracks.filter(t => (t.status?.version ?? -1) < this.rec.target)
    if (behind.length > 0 && this.rec.marks.publish != null) {
      this.io.err(`testnet: ${behind.length} member(s) not at ${versionLabel(this.rec.target)}:`)
      for (const t of behind) {
        const last = t.events.at(-1)
        this.io.err(`  ${t.name} ${t.alive ? 'up' : 'down'} ${t.status != null ? versionLabel(t.status.version) : '--'} ${t.status?.upgrading != null ? `${t.status.upgrading.phase}@${t.status.upgrading.version}` : ''} record ${t.status?.fleetPhase ?? '?'}${last != null ? `, last event ${JSON.stringify(last)}` : ''}`)
      }
    }
    this.io.err(`testnet: state dumped to ${join(this.options.dataDir, 'members.json')}`)
  }

  /** `--keep`: how to reach the running testnet; then waits for the signal. */
  async keep (signal: AbortSignal): Promise<void> {
    const setup = this.setup
    if (setup == null) return
    const first = this.nodes[0]
    this.io.err('')
    this.io.err('testnet: kept running; Ctrl-C stops it. Try:')
    if (first?.config.dataDir != null) {
      this.io.err(`  npx molt status --data ${first.config.dataDir}`)
      this.io.err(`  npx molt publish --data ${first.config.dataDir} --bundle <dir> --class ${setup.nodeClass} --key ${setup.releaseKeyPath} --wait 3`)
      this.io.err(`  npx molt pause --data ${first.config.dataDir} --key ${setup.releaseKeyPath}`)
    } else {
      this.io.err('  (in-process members have no admin sockets)')
    }
    for (const m of this.members) this.io.err(`  ${m.name} ${m.peerId ?? ''} ${m.config.dataDir ?? ''}`)
    await untilAborted(signal)
  }

  /** Stops every member and closes the shared store. */
  async close (): Promise<void> {
    await Promise.allSettled(this.members.map(async m => { await m.stop() }))
    await this.shared?.close()
  }

  // --- members ----------------------------------------------------------------------------------

  private config (name: string, role: 'node' | 'client', pack: string[]): MemberConfig {
    const setup = this.setup as TestnetSetup
    const dataDir = this.options.inProcess ? undefined : join(this.options.dataDir, name)
    return {
      name,
      role,
      class: role === 'node' ? setup.nodeClass : setup.clientClass,
      genesis: genesisToJSON(setup.genesis),
      ...(dataDir != null ? { dataDir } : {}),
      listen: this.options.inProcess ? [`/memory/testnet-${process.pid}-${name}`] : ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [],
      pack,
      admin: !this.options.inProcess,
      statusMs: TUNING.statusMs,
      // the pulls of called peers each period, like the example's jobs, slow down with the pace
      fleet: { ...TUNING.fleet, announceMs: TUNING.fleet.announceMs * chordPace(this.options) },
      announcers: this.options.inProcess ? TUNING.announcersInProcess : TUNING.announcers,
      retryMs: TUNING.retryMs
    }
  }

  private handle (config: MemberConfig): MemberHandle {
    const m = this.options.inProcess
      ? new LocalMember(config, this.rec, this.shared as MoltStore, this.entry)
      : new ProcessMember(config, this.rec, this.entry as MemberEntry, join(this.options.dataDir, `${config.name}.log`))
    this.rec.track(config.name, config.role)
    this.members.push(m)
    return m
  }

  /** Addresses of up to `n` random live members (nodes only by default). */
  private bootstrapFor (n: number, among: MemberHandle[] = this.nodes): string[] {
    const live = among.filter(m => m.alive && m.peerId != null && m.addresses.length > 0)
    return shuffle(live, this.random).slice(0, n).flatMap(m => m.addresses.slice(0, 1).map(a => a.includes('/p2p/') ? a : `${a}/p2p/${m.peerId as string}`))
  }

  private async startOne (m: MemberHandle): Promise<void> {
    m.config.bootstrap = this.bootstrapFor(TUNING.bootstrapPeers)
    await m.start(this.signal)
    const t = this.rec.track(m.name, m.role)
    t.alive = true
    if (m.peerId != null) t.peerId = m.peerId
    t.lifecycle.push({ at: Date.now(), what: 'started' })
  }

  private async startAll (): Promise<void> {
    const o = this.options
    const setup = this.setup as TestnetSetup
    const width = String(o.nodes - 1).length
    const names = Array.from({ length: o.nodes }, (_, i) => `n${String(i).padStart(Math.max(2, width), '0')}`)
    const first = this.handle(this.config(names[0] as string, 'node', [
      (setup.bundles.node.get(1) as { dir: string }).dir,
      (setup.bundles.client.get(1) as { dir: string }).dir
    ]))
    for (const name of names.slice(1)) this.handle(this.config(name, 'node', []))
    for (let i = 0; i < o.clients; i++) this.handle(this.config(`c${i}`, 'client', []))

    this.stage(`starting ${o.nodes} nodes`)
    await this.startOne(first)
    const batch = o.inProcess ? TUNING.startBatchInProcess : TUNING.startBatch
    const rest = this.nodes.slice(1)
    for (let i = 0; i < rest.length; i += batch) {
      this.signal.throwIfAborted()
      await Promise.all(rest.slice(i, i + batch).map(async m => { await this.startOne(m) }))
      this.stage(`started ${Math.min(i + batch, rest.length) + 1}/${o.nodes} nodes`)
    }
    this.stage(`starting ${o.clients} client(s)`)
    await Promise.all(this.clients.map(async m => { await this.startOne(m) }))
    await this.mesh()
  }

  /**
   * Connects each member to up to `TUNING.meshPeers` random nodes (every node of a 16-node
   * testnet). On a testnet this small, every DHT query (the bundles' providers) reaches every
   * node: without this, the first one — at the publish — opens a burst of connections (noise
   * handshakes, identify, peer-book updates) that would be counted as rollout cost.
   */
  private async mesh (): Promise<void> {
    this.stage('connecting the members')
    const nodes = this.nodes
    await Promise.all(this.members.map(async m => {
      const others = nodes.filter(n => n !== m)
      const addresses = this.bootstrapFor(this.options.inProcess ? TUNING.meshPeersInProcess : TUNING.meshPeers, others)
      await m.request('dial', { addresses }, 60_000).catch(() => {})
    }))
  }

  // --- the ring ---------------------------------------------------------------------------------

  private async infos (): Promise<NodeInfo[]> {
    return await Promise.all(this.nodes.filter(m => m.alive).map(async m => ({
      name: m.name,
      peerId: m.peerId as string,
      info: await m.request('info', {}, 5000).catch(() => undefined)
    })))
  }

  /** Throws when a member exited without being told to. */
  private failFast (): void {
    const dead = this.members.find(m => !m.alive && !m.expectingExit && !m.starting && m.peerId != null)
    if (dead != null) {
      throw new MemberFailedError(`${dead.name} exited unexpectedly${dead.config.dataDir != null ? ` (see ${join(this.options.dataDir, `${dead.name}.log`)})` : ''}`)
    }
  }

  private async waitForRing (what: string, timeoutMs: number): Promise<void> {
    this.stage(`waiting until ${what}`)
    let stableSince = 0
    await until(async () => {
      this.failFast()
      const infos = await this.infos()
      const ring = ringState(infos)
      this.lastRing = { at: new Date().toISOString(), ring, infos }
      if (!ring.stable || infos.length < this.nodes.length) {
        stableSince = 0
        this.view?.detail(ring.reason ?? `${infos.length} of ${this.nodes.length} nodes answer`)
        return false
      }
      this.ring = ring
      if (stableSince === 0) stableSince = Date.now()
      // stable twice in a row, a second apart
      return Date.now() - stableSince >= 1000
    }, what, timeoutMs, this.signal, 500)
  }

  /**
   * What the members' fleet views count: each node its replica group, an arc of consecutive
   * ring nodes; each client every node (the roster of its class-order schedule).
   */
  private async assignGroups (): Promise<void> {
    const order = this.ring?.order ?? []
    const groups = arcGroups(order, TUNING.arc)
    const byName = new Map(this.members.map(m => [m.name, m]))
    const roster = peerIds(this.nodes)
    await Promise.all([
      ...groups.flatMap((group, g) => group.map(async name => {
        const m = byName.get(name)
        if (m == null) return
        const replicas = peerIds(group.filter(n => n !== name).map(n => byName.get(n)).filter(x => x != null))
        m.config.counted = { group: `arc-${g}`, replicas }
        await m.request('counted', m.config.counted)
      })),
      ...this.clients.map(async c => {
        c.config.counted = { roster }
        await c.request('counted', c.config.counted)
      })
    ])
  }

  // --- the workload -----------------------------------------------------------------------------

  private opCount (): number {
    const t = this.rec.totals
    return t.ok + t.failed + t.refused + t.untyped
  }

  private plan (index: number, client: MemberHandle): WorkloadPlan {
    return {
      keys: Array.from({ length: TUNING.keysPerClient }, (_, i) => `${client.name}/k${i}`),
      shared: Array.from({ length: TUNING.sharedKeys }, (_, i) => `shared/s${i}`),
      lanes: TUNING.lanes,
      ratePerLane: TUNING.ratePerLane,
      deadlineMs: TUNING.opDeadlineMs,
      deleteFromVersion: 1,
      seed: this.options.seed + index + 1
    }
  }

  private async startWorkload (): Promise<void> {
    await Promise.all(this.clients.map(async (c, i) => { await c.request('workload-start', { plan: this.plan(i, c) }) }))
  }

  /** Waits until every member's fleet view holds the peers it counts, or `ms` passed (noted). */
  private async waitForFleetViews (ms: number): Promise<void> {
    this.stage('fleet views: every member hears its counted peers')
    const alive = new Set(this.nodes.filter(n => n.alive).map(n => n.peerId))
    await this.waitUntilKnown(
      this.members.filter(m => m.alive && m.config.counted != null),
      m => (m.config.counted?.replicas ?? m.config.counted?.roster ?? []).filter(p => alive.has(p)),
      async m => (await m.request('view', {}, 10_000).catch(() => [])).map(e => e.peer),
      ms, 'the fleet views', 'the workload starts anyway')
  }

  /** Waits until every client's member list holds every live node, or `ms` passed (noted). */
  private async waitForClientViews (ms: number): Promise<void> {
    const want = peerIds(this.nodes.filter(n => n.alive))
    await this.waitUntilKnown(
      this.clients,
      () => want,
      async c => {
        const info = await c.request('info', {}, 10_000).catch(() => undefined) as { members?: unknown } | undefined
        return Array.isArray(info?.members) ? info.members as string[] : []
      },
      ms, 'the clients\' member lists', 'the steady state starts anyway')
  }

  /**
   * Polls `members` every second until each knows every peer it `wants`; after `ms` a note says
   * who still misses how many, and the run goes on.
   */
  private async waitUntilKnown (members: MemberHandle[], wants: (m: MemberHandle) => string[], known: (m: MemberHandle) => Promise<string[]>, ms: number, what: string, then: string): Promise<void> {
    let short: string[] = []
    await until(async () => {
      short = []
      await Promise.all(members.map(async m => {
        const heard = new Set(await known(m))
        const missing = wants(m).filter(p => !heard.has(p)).length
        if (missing > 0) short.push(`${m.name} misses ${missing}`)
      }))
      return short.length === 0
    }, `${what} are complete`, ms, this.signal, 1000).catch((err: Error) => {
      if (!(err instanceof StageTimeoutError)) throw err
      this.rec.note(`${what} were still incomplete after ${(ms / 1000).toFixed(0)} s (${short.slice(0, 8).join(', ')}${short.length > 8 ? ', …' : ''}); ${then}`)
    })
  }

  private async stopWorkload (): Promise<WorkloadRecord[]> {
    this.stage('stopping the workload')
    const records = await Promise.all(this.clients.map(async c => await c.request('workload-stop', {}, 60_000)))
    this.rec.marks.workloadStop = Date.now()
    return records
  }

  private async verify (records: WorkloadRecord[]): Promise<WriteCheck> {
    const reads: ReadBack[] = []
    const shared = new Set(keysOf(records).filter(k => k.startsWith('shared/')))
    await Promise.all(this.clients.map(async c => {
      const own = records.find(r => r.client === c.name)
      const keys = [...new Set([...(own?.writes.map(w => w.key) ?? []).filter(k => !shared.has(k)), ...shared])]
      reads.push(...await c.request('verify', { keys, deadlineMs: 15_000 }, 600_000))
    }))
    return checkWrites(records, reads)
  }

  // --- the rollout ------------------------------------------------------------------------------

  /** the node the upgrades are published through, chosen at random */
  private publisher: MemberHandle | undefined

  /**
   * The publisher packs (stores, serves and announces in the DHT) the new bundles before the
   * workload's warm-up ends, as an upgrader packs a release on a long-running node before
   * publishing it (`molt publish --data` packs first too): the providers are findable when the
   * manifest arrives. Its cost (two DHT walks) falls in the warm-up, not in the steady-state
   * window: that window is the baseline of the rollout's latency, so it holds no upgrade work.
   */
  private async prepack (): Promise<void> {
    const setup = this.setup as TestnetSetup
    const live = this.nodes.filter(n => n.alive)
    const through = this.publisher = live[Math.floor(this.random() * live.length)] as MemberHandle
    const dirs = [...setup.bundles.node.entries(), ...setup.bundles.client.entries()].filter(([v]) => v >= 2 && v <= this.options.to).map(([, b]) => b.dir)
    this.rec.note(`${through.name} packs the new bundles`)
    await through.request('pack', { dirs }, 120_000)
  }

  private async publish (version: number, withFaults: boolean): Promise<void> {
    const setup = this.setup as TestnetSetup
    const o = this.options
    const roster = peerIds(this.nodes)
    const { manifest, pack } = await upgradeManifest(setup, this.head as SignedManifest, version, { schedule: o.schedule, params: o.params, roster })
    this.head = manifest
    const live = this.nodes.filter(n => n.alive)
    const through = this.publisher?.alive === true ? this.publisher : live[Math.floor(this.random() * live.length)] as MemberHandle
    this.rec.target = version
    this.stage(`publishing ${versionLabel(version)} (system version ${version}) through ${through.name}`)
    const at = Date.now()
    if (version === 1) this.rec.marks.publish = at
    const r = await through.request('publish', { manifest: toString(encodeSignedManifest(manifest), 'base64'), pack }, 120_000)
    this.rec.marks.publishes.push({ version, at, through: through.name, cid: r.cid })
    if (r.verdict !== 'accepted') this.rec.note(`publish through ${through.name}: verdict ${r.verdict}`)
    this.stage(`rolling out ${versionLabel(version)}: published through ${through.name}`)
    if (withFaults) {
      const faults: Array<Promise<void>> = []
      if (o.faults.kill > 0) faults.push(this.killSome(o.faults.kill, through))
      if (o.faults.partition) faults.push(this.partition())
      // faults run alongside the rollout; a failure of theirs ends the run when the rollout is
      // waited for (never an unhandled rejection, whatever stage the run is in)
      this.faults = Promise.all(faults).then(() => undefined, (err: unknown) => err as Error)
    }
  }

  /** the faults in progress: resolves with their failure, if any */
  private faults: Promise<Error | undefined> = Promise.resolve(undefined)

  private async waitUpgraded (version: number): Promise<void> {
    const all = (): boolean => this.members.every(m => m.status != null && m.status.version >= version)
    const nodes = (): boolean => this.nodes.every(m => m.status != null && m.status.version >= version)
    let explained = false
    await until(() => {
      this.failFast()
      if (version === this.rec.target && this.rec.marks.propagated == null && this.members.every(m => (m.status?.head ?? 0) >= version)) {
        this.rec.marks.propagated = Date.now()
      }
      if (this.rec.marks.nodesUpgraded == null && nodes()) this.rec.marks.nodesUpgraded = Date.now()
      if (!explained && this.rec.marks.nodesUpgraded != null && Date.now() - this.rec.marks.nodesUpgraded > 20_000) {
        explained = true
        void this.explainLaggards(version)
      }
      return all()
    }, `every member runs ${versionLabel(version)}`, Math.max(300_000, this.options.nodes * 6000), this.signal)
    const failed = await this.faults
    if (failed != null) throw failed
    // faults may have restarted members: they must run the version too
    await until(all, `every member runs ${versionLabel(version)} after the faults`, 120_000, this.signal)
    this.rec.marks.allUpgraded = Date.now()
    this.stage(`every member runs ${versionLabel(version)}`)
  }

  /** Notes what the fleet view of each member still behind holds of the chord nodes. */
  private async explainLaggards (version: number): Promise<void> {
    const ids = new Map(this.nodes.map(n => [n.peerId, n.name]))
    for (const m of this.members.filter(x => x.alive && (x.status?.version ?? 0) < version)) {
      const view = await m.request('view', {}, 5000).catch(() => undefined)
      if (view == null) continue
      const nodes = view.filter(e => ids.has(e.peer))
      const behind = nodes.filter(e => e.version < version || e.phase === 'upgrading').map(e => `${ids.get(e.peer) ?? '?'} ${versionLabel(e.version)} ${e.phase} ${(e.heardMsAgo / 1000).toFixed(0)} s ago`)
      const missing = [...ids.entries()].filter(([p]) => !nodes.some(e => e.peer === p)).map(([, n]) => n)
      this.rec.note(`${m.name} still waits (${m.status?.fleetPhase ?? '?'}); its view holds ${nodes.length} node(s)${behind.length > 0 ? `, behind: ${behind.join(', ')}` : ''}${missing.length > 0 ? `, missing: ${missing.join(' ')}` : ''}`)
    }
  }

  /** SIGKILLs `k` nodes mid-rollout and restarts them from their data directories. */
  private async killSome (k: number, publisher: MemberHandle): Promise<void> {
    const target = this.rec.target
    // mid-rollout: once some node is upgrading or upgraded, or 3 s after the publish
    const since = Date.now()
    await until(() => Date.now() - since > 3000 || this.nodes.some(n => n.status?.upgrading != null && ['quiescing', 'stopped', 'transforming', 'checking'].includes(n.status.upgrading.phase)) ||
      this.nodes.some(n => (n.status?.version ?? 0) >= target), 'the rollout is under way', 60_000, this.signal, 100)
    const candidates = this.nodes.filter(n => n !== publisher && n.alive)
    const waiting = candidates.filter(n => (n.status?.version ?? 0) < target)
    const victims = shuffle(waiting.length >= k ? waiting : candidates, this.random).slice(0, k)
    const at = Date.now()
    for (const v of victims) {
      v.kill()
      this.rec.track(v.name, v.role).lifecycle.push({ at, what: 'killed' })
      this.rec.marks.kills.push({ name: v.name, at })
    }
    this.rec.note(`SIGKILLed ${victims.map(v => v.name).join(', ')}`)
    await sleep(TUNING.killDownMs, this.signal)
    await Promise.all(victims.map(async v => {
      await this.startOne(v)
      const mark = this.rec.marks.kills.find(x => x.name === v.name && x.restartedAt == null)
      if (mark != null) mark.restartedAt = Date.now()
      this.rec.track(v.name, v.role).lifecycle.push({ at: Date.now(), what: 'restarted' })
    }))
    this.rec.note(`restarted ${victims.map(v => v.name).join(', ')} from their data dirs`)
  }

  /** Cuts the ring in two (two arcs; clients alternate sides), holds it, heals it. */
  private async partition (): Promise<void> {
    await sleep(1000, this.signal)
    const order = this.ring?.order ?? this.nodes.map(n => n.name)
    const half = Math.ceil(order.length / 2)
    const a = new Set(order.slice(0, half))
    this.clients.forEach((c, i) => { if (i % 2 === 0) a.add(c.name) })
    const sideA = this.members.filter(m => a.has(m.name))
    const sideB = this.members.filter(m => !a.has(m.name))
    this.rec.marks.sides = { a: sideA.map(m => m.name), b: sideB.map(m => m.name) }
    this.rec.marks.partition = Date.now()
    await Promise.all([
      ...sideA.filter(m => m.alive).map(async m => { await m.request('partition', { deny: peerIds(sideB) }) }),
      ...sideB.filter(m => m.alive).map(async m => { await m.request('partition', { deny: peerIds(sideA) }) })
    ])
    this.rec.note(`partitioned: ${sideA.map(m => m.name).join(' ')} | ${sideB.map(m => m.name).join(' ')}`)
    await sleep(TUNING.partitionMs, this.signal)
    this.rec.marks.heal = Date.now()
    await Promise.all(this.members.filter(m => m.alive).map(async m => {
      const other = a.has(m.name) ? sideB : sideA
      await m.request('heal', { dial: this.bootstrapFor(2, other.filter(x => x.role === 'node')) })
    }))
    this.rec.note('healed the partition')
  }

  /** `--control`: each node stopped and restarted from its data directory, one at a time. */
  private async controlRestarts (): Promise<void> {
    this.rec.marks.publish = Date.now()
    let i = 0
    for (const m of this.nodes) {
      i++
      this.stage(`control: restarting ${m.name} (${i}/${this.nodes.length})`)
      const at = Date.now()
      this.rec.track(m.name, m.role).lifecycle.push({ at, what: 'stopped' })
      await m.stop()
      await this.startOne(m)
      this.rec.marks.restarts.push({ name: m.name, at, readyAt: Date.now() })
      this.rec.track(m.name, m.role).lifecycle.push({ at: Date.now(), what: 'restarted' })
      await sleep(TUNING.controlGapMs, this.signal)
    }
    this.rec.marks.propagated = undefined
    this.rec.marks.nodesUpgraded = Date.now()
    this.rec.marks.allUpgraded = Date.now()
  }
}

/**
 * Runs the testnet. With `keep`, leaves it running after the run until `keepSignal` aborts.
 * Every member is stopped before it returns.
 */
export async function runTestnet (options: TestnetOptions, io: TestnetIO, onResult?: (result: TestnetResult) => Promise<void>): Promise<TestnetResult> {
  await mkdir(options.dataDir, { recursive: true })
  const testnet = new Testnet(options, io)
  try {
    const result = await testnet.run()
    await onResult?.(result)
    if (options.keep && io.signal != null) await testnet.keep(io.signal)
    return result
  } finally {
    await testnet.close()
  }
}
