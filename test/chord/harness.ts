/**
 * Shared pieces of the Chord tests: the example's bundles in a genesis, real molt nodes running
 * `chord-node` and `chord-client` (memory transport), and reading a ring's state through each
 * node's own `info` (whatever its Chord version).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildBundle, createControl, createManifest, signControl, signManifest, type GenesisConfig, type MoltNode, type MoltNodeOptions, type ScheduleHook } from '../../src/index.ts'
import { buildChordBundles, CHORD_CLIENT, CHORD_NODE, type BundleFiles, type ChordBundles } from '../../examples/chord/build.ts'
import { CONFIG } from '../../examples/chord/src/config.ts'
import { ringId } from '../../examples/chord/src/ring.ts'
import { makeKeys, policyOf, type TestKeys } from '../fixtures.ts'
import { startNode } from '../nodes.ts'
import type { Gate } from '../runtime/apps.ts'

export { CHORD_CLIENT, CHORD_NODE, ringId }

export interface ChordSystem {
  keys: TestKeys
  genesis: GenesisConfig
  bundles: ChordBundles
}

/** A genesis whose version 0 runs Chord v1 (`chord-node`) and client v1 (`chord-client`). */
export async function chordSystem (system = 'chord'): Promise<ChordSystem> {
  const keys = await makeKeys()
  const bundles = await buildChordBundles()
  const node = await buildBundle(bundles.node.v1)
  const client = await buildBundle(bundles.client.v1)
  return {
    keys,
    bundles,
    genesis: {
      system,
      policy: policyOf(keys),
      classes: [
        { name: CHORD_NODE, bundle: node.root, bundleSize: node.size },
        { name: CHORD_CLIENT, bundle: client.root, bundleSize: client.size }
      ],
      createdAt: 1
    }
  }
}

export interface MemberOptions {
  class: string
  /** bundles this node packs (the first node of a system packs the genesis bundles) */
  pack?: BundleFiles[]
  /** nodes to dial at start */
  bootstrap?: MoltNode[]
  /** holds this node's upgrades until opened */
  gate?: Gate
  /** or: a node's own schedule hook */
  schedule?: ScheduleHook
  dataDir?: string
  extra?: Partial<MoltNodeOptions>
}

/** Starts a node running a Chord class. */
export async function startMember (sys: ChordSystem, options: MemberOptions): Promise<MoltNode> {
  const g = options.gate
  return await startNode(sys.genesis, {
    fetchBundles: true,
    pack: options.pack ?? [],
    bootstrap: (options.bootstrap ?? []).flatMap(n => n.libp2p.getMultiaddrs().map(String)),
    ...(options.dataDir != null ? { dataDir: options.dataDir } : {}),
    app: {
      class: options.class,
      ...(g != null ? { schedule: async ({ signal }: { signal: AbortSignal }) => { await g.wait(signal) } } : {}),
      ...(options.schedule != null ? { schedule: options.schedule } : {}),
      manager: { retryMs: 100 }
    },
    ...options.extra
  })
}

/**
 * Starts `n` ring nodes and `clients` client nodes: the first packs the genesis bundles, each
 * later one dials two earlier ones (a sparse overlay: ring neighbours are usually not dialled).
 */
export async function startChord (sys: ChordSystem, n: number, clients: number, options: { gates?: Gate[], schedules?: ScheduleHook[], dataDirs?: string[], into?: MoltNode[] } = {}): Promise<{ ring: MoltNode[], clients: MoltNode[] }> {
  const all = options.into ?? []
  const ring: MoltNode[] = []
  const cls: MoltNode[] = []
  for (let i = 0; i < n + clients; i++) {
    const isNode = i < n
    const started = [...ring, ...cls]
    const bootstrap = started.length === 0 ? [] : [started[0]!, ...(started.length > 1 ? [started[Math.floor(started.length / 2)]!, started[started.length - 1]!] : [])]
    const node = await startMember(sys, {
      class: isNode ? CHORD_NODE : CHORD_CLIENT,
      pack: i === 0 ? [sys.bundles.node.v1, sys.bundles.client.v1] : [],
      bootstrap: [...new Set(bootstrap)],
      ...(options.gates?.[i] != null ? { gate: options.gates[i] } : {}),
      ...(options.schedules?.[i] != null ? { schedule: options.schedules[i] } : {}),
      ...(options.dataDirs?.[i] != null ? { dataDir: options.dataDirs[i] } : {})
    })
    all.push(node)
    if (isNode) ring.push(node)
    else cls.push(node)
  }
  return { ring, clients: cls }
}

/** A call from a node to a peer (or itself), labelled with the node's version. */
export async function call (from: MoltNode, to: MoltNode, method: string, args: unknown[] = [], deadlineMs = 10_000): Promise<unknown> {
  return await from.app!.layer.call(to.peerId, method, args as never, { deadlineMs })
}

/** The same, labelled with a chosen version (as an object of that version would label it). */
export async function callAs (version: number, from: MoltNode, to: MoltNode, method: string, args: unknown[] = [], deadlineMs = 10_000): Promise<unknown> {
  return await from.app!.layer.call(to.peerId, method, args as never, { deadlineMs, version, class: from.app!.manager.current.class })
}

/** A node's view of itself, the same shape at every Chord version. */
export interface RingView {
  peer: string
  id: string
  chord: number
  pred: string | null
  succs: string[]
  preds: string[]
  keys: number
  tombstones: number
  warm: boolean
}

export async function view (node: MoltNode): Promise<RingView> {
  const i = await call(node, node, 'info', [], 3000) as Record<string, unknown>
  return {
    peer: i.peer as string,
    id: i.id as string,
    chord: i.chord as number,
    pred: (i.pred ?? i.predecessor ?? null) as string | null,
    succs: (i.succs ?? i.successors) as string[],
    preds: (i.preds ?? i.predecessors ?? []) as string[],
    keys: i.keys as number,
    tombstones: (i.tombstones ?? 0) as number,
    warm: i.warm as boolean
  }
}

/**
 * Whether the nodes' successor and predecessor pointers form one ring in id order (and their
 * successor lists continue it); the reason when not.
 */
export async function ringCheck (nodes: MoltNode[]): Promise<true | string> {
  const views = await Promise.all(nodes.map(view))
  const sorted = [...views].sort((a, b) => a.id < b.id ? -1 : 1)
  const n = sorted.length
  for (let i = 0; i < n; i++) {
    const v = sorted[i]!
    const want = sorted[(i + 1) % n]!.peer
    const wantPred = sorted[(i + n - 1) % n]!.peer
    if (v.succs[0] !== want) return `${v.id}: successor ${v.succs[0] != null ? ringId(v.succs[0]) : 'none'}, expected ${sorted[(i + 1) % n]!.id}`
    if (v.pred !== wantPred) return `${v.id}: predecessor ${v.pred != null ? ringId(v.pred) : 'none'}, expected ${sorted[(i + n - 1) % n]!.id}`
    const list = Math.min(n - 1, CONFIG.successors)
    for (let k = 0; k < list; k++) {
      if (v.succs[k] !== sorted[(i + 1 + k) % n]!.peer) return `${v.id}: successor list wrong at ${k}`
    }
  }
  return true
}

/** The nodes in ring order (by the id of their peer id). */
function byRingId (nodes: MoltNode[]): MoltNode[] {
  return [...nodes].sort((a, b) => ringId(a.peerId.toString()) < ringId(b.peerId.toString()) ? -1 : 1)
}

/** The node responsible for a key: the first node at or after the key's id. */
export function ownerOf (nodes: MoltNode[], key: string): MoltNode {
  const id = ringId(key)
  const sorted = byRingId(nodes)
  return sorted.find(n => ringId(n.peerId.toString()) >= id) ?? sorted[0]!
}

/** The nodes after `node` on the ring, in order. */
export function successorsOf (nodes: MoltNode[], node: MoltNode, k: number): MoltNode[] {
  const sorted = byRingId(nodes)
  const i = sorted.indexOf(node)
  return Array.from({ length: Math.min(k, sorted.length - 1) }, (_, j) => sorted[(i + 1 + j) % sorted.length]!)
}

/** Publishes version `version` with class upgrades of the Chord classes to the given bundles. */
export async function publishUpgrade (sys: ChordSystem, via: MoltNode, version: number, upgrades: Array<{ class: string, files: BundleFiles }>): Promise<void> {
  const classUpgrades = []
  for (const u of upgrades) {
    const packed = await via.bundles.packFiles(u.files)
    classUpgrades.push({ oldClass: u.class, newClass: u.class, bundle: packed.cid, bundleSize: packed.size, schedule: { name: 'gated' } })
  }
  let manifest = await createManifest({ system: sys.genesis.system, version, previous: via.head().cid, classUpgrades, createdAt: 1 + version })
  for (const k of sys.keys.release.slice(0, 2)) manifest = await signManifest(manifest, k)
  await via.publish(manifest)
}

/** Retires every version below `minimumVersion`. */
export async function retire (sys: ChordSystem, via: MoltNode, seq: number, scope: number, minimumVersion: number): Promise<void> {
  let control = await createControl({ system: sys.genesis.system, seq, scope, action: { type: 'retire', minimumVersion }, createdAt: 10 + seq })
  for (const k of sys.keys.release.slice(0, 2)) control = await signControl(control, k)
  await via.publishControl(control)
}

/** A temporary directory, removed by the returned function. */
export async function tempDir (name: string): Promise<{ path: string, remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `molt-chord-${name}-`))
  return { path, remove: async () => { await rm(path, { recursive: true, force: true }) } }
}

/**
 * A schedule that says "upgrade now" to versions up to `limits[i]` (read at every check, so a
 * test may raise it), and waits otherwise.
 */
export function ceilings (limits: number[]): ScheduleHook[] {
  return limits.map((_, i) => async ({ manifest, signal }) => {
    while (manifest.body.version > limits[i]!) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, 100)
        signal.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason) }, { once: true })
      })
    }
  })
}

/**
 * Waits until every node runs `version` with no upgrade in progress; on timeout the error says
 * where each node is (version, phase, last history entry).
 */
export async function atVersion (nodes: MoltNode[], version: number, description: string, deadlineMs = 90_000): Promise<void> {
  const until = Date.now() + deadlineMs
  while (Date.now() < until) {
    if (nodes.every(n => n.app!.manager.current.version === version && n.app!.manager.phase == null)) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const where = await Promise.all(nodes.map(async n => {
    const m = n.app!.manager
    const last = (await m.history()).at(-1)
    return `${n.peerId.toString().slice(-6)}: v${m.current.version} ${m.phase != null ? `${m.phase.phase}→${m.phase.version}` : 'idle'}${last != null ? ` (last: ${last.event} ${last.from}→${last.to}${last.detail != null ? ` ${String(last.detail).slice(0, 200)}` : ''})` : ''}`
  }))
  throw new Error(`timed out waiting for: ${description}\n${where.join('\n')}`)
}
