/**
 * What the testnet knows of the Chord example (`examples/chord/`): its bundles per version, its
 * class names, how system versions map to Chord versions, and how to tell from the nodes'
 * `info([])` answers that the ring has stabilised.
 *
 * @packageDocumentation
 */
import { existsSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ChordExampleError } from './errors.ts'
import type { BundleFiles, ChordBundles } from '../examples/chord/build.ts'

export type { BundleFiles, ChordBundles }

/** The example's bundles and class names. */
export interface ChordExample {
  bundles: ChordBundles
  nodeClass: string
  clientClass: string
}

/** Where the example's build module lives. */
export const CHORD_BUILD = fileURLToPath(new URL('../examples/chord/build.ts', import.meta.url))

/** The Chord version a system version runs: the genesis (0) is Chord v1. */
export function chordVersion (systemVersion: number): number {
  return systemVersion + 1
}

/** `v2` for system version 1: how versions are shown. */
export function versionLabel (systemVersion: number): string {
  return `v${chordVersion(systemVersion)}`
}

/**
 * Builds the example's bundles through `examples/chord/build.ts` (`buildChordBundles()`), loaded
 * only when a run needs it (it loads esbuild), with its background jobs `pace` times slower.
 */
export async function loadChord (pace = 1): Promise<ChordExample> {
  if (!existsSync(CHORD_BUILD)) {
    throw new ChordExampleError(`the Chord example is missing: ${CHORD_BUILD} does not exist`)
  }
  let mod: typeof import('../examples/chord/build.ts')
  try {
    mod = await import(pathToFileURL(CHORD_BUILD).href) as typeof mod
  } catch (err) {
    throw new ChordExampleError(`cannot load ${CHORD_BUILD}: ${(err as Error).message}`, { cause: err })
  }
  try {
    return { bundles: await mod.buildChordBundles({ pace }), nodeClass: mod.CHORD_NODE, clientClass: mod.CHORD_CLIENT }
  } catch (err) {
    throw new ChordExampleError(`buildChordBundles() failed: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * One node's answer to `info([])`, with the launcher's name for it. The example answers
 * `{ class, chord, peer, id, keys, ... }` with the successor list and predecessor (peer ids) as
 * `successors` / `predecessor` (v1) or `succs` / `pred` (v2); `id` is 16 hex digits.
 */
export interface NodeInfo {
  name: string
  peerId: string
  info: unknown
}

/** What the ring looks like. */
export interface RingState {
  stable: boolean
  /** why not, for people */
  reason?: string
  /** member names in ring order (from the lowest id), when stable */
  order: string[]
  /** keys held per member, when the info says */
  keys: Record<string, number>
}

/** An identifier as a comparable string: numbers and bigints as decimals, bytes as hex. */
function idText (value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'bigint') return value.toString()
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex')
  return undefined
}

/** A pointer (successor / predecessor) → the id or peer id it names. */
function pointer (value: unknown): string[] {
  if (value == null) return []
  const direct = idText(value)
  if (direct != null) return [direct]
  if (typeof value === 'object') {
    const o = value as Record<string, unknown>
    return ['id', 'peer', 'peerId'].map(k => idText(o[k])).filter((x): x is string => x != null)
  }
  return []
}

/** Compares two ids: fixed-width ids (the example's 16 hex digits) as text, decimals numerically. */
function compareIds (a: string, b: string): number {
  if (a.length !== b.length && /^\d+$/.test(a) && /^\d+$/.test(b)) {
    const x = BigInt(a)
    const y = BigInt(b)
    return x < y ? -1 : x > y ? 1 : 0
  }
  return a < b ? -1 : a > b ? 1 : 0
}

/**
 * The ring is stable when following successors from any node visits every node once and comes
 * back, climbing through the ids with a single wrap, and (where the info gives predecessors)
 * each node's predecessor is the node whose successor it is.
 */
export function ringState (infos: readonly NodeInfo[]): RingState {
  const keys: Record<string, number> = {}
  const byRef = new Map<string, string>()
  const ids = new Map<string, string>()
  const succ = new Map<string, string | undefined>()
  const pred = new Map<string, string | undefined>()
  for (const n of infos) {
    const info = (n.info ?? {}) as Record<string, unknown>
    const id = idText(info.id)
    if (id == null) return { stable: false, reason: `${n.name} has no id yet`, order: [], keys }
    ids.set(n.name, id)
    byRef.set(id, n.name)
    byRef.set(n.peerId, n.name)
    const k = info.keys
    keys[n.name] = typeof k === 'number' ? k : Array.isArray(k) ? k.length : 0
  }
  for (const n of infos) {
    const info = (n.info ?? {}) as Record<string, unknown>
    // the example answers `succs` (successor list, peer ids) and `pred` (a peer id)
    // each Chord version has its own wire: v1 answers `successors` / `predecessor`, v2 `succs` /
    // `pred` (peer ids); an empty successor list is a node alone, its own successor
    const list = Array.isArray(info.succs) ? info.succs : Array.isArray(info.successors) ? info.successors : undefined
    const successor = info.successor ?? (list != null ? list[0] ?? n.peerId : undefined)
    const predecessor = info.predecessor ?? info.pred
    succ.set(n.name, pointer(successor).map(r => byRef.get(r)).find(x => x != null))
    pred.set(n.name, pointer(predecessor).map(r => byRef.get(r)).find(x => x != null))
  }
  const names = infos.map(n => n.name)
  if (names.length === 0) return { stable: false, reason: 'no nodes', order: [], keys }
  if (names.length === 1) return { stable: true, order: names, keys }
  const start = names.reduce((lo, n) => compareIds(ids.get(n) as string, ids.get(lo) as string) < 0 ? n : lo)
  const order: string[] = []
  let at: string | undefined = start
  const seen = new Set<string>()
  while (at != null && !seen.has(at)) {
    seen.add(at)
    order.push(at)
    at = succ.get(at)
  }
  if (at == null) return { stable: false, reason: `${order.at(-1) ?? start} has no known successor`, order: [], keys }
  if (at !== start || order.length !== names.length) {
    return { stable: false, reason: `successors from ${start} make a cycle of ${order.length} of ${names.length} nodes`, order: [], keys }
  }
  for (let i = 1; i < order.length; i++) {
    if (compareIds(ids.get(order[i - 1] as string) as string, ids.get(order[i] as string) as string) >= 0) {
      return { stable: false, reason: `${order[i - 1]} → ${order[i]} does not climb the ring`, order: [], keys }
    }
  }
  for (let i = 0; i < order.length; i++) {
    const p = pred.get(order[i] as string)
    const expected = order[(i - 1 + order.length) % order.length]
    if (p != null && p !== expected) {
      return { stable: false, reason: `${order[i]}'s predecessor is ${p}, not ${expected}`, order: [], keys }
    }
  }
  return { stable: true, order, keys }
}

/**
 * Replica groups for `one-replica-at-a-time`: arcs of `size` consecutive ring members (a last
 * arc shorter than 2 joins the previous one).
 */
export function arcGroups (order: readonly string[], size: number): string[][] {
  const groups: string[][] = []
  for (let i = 0; i < order.length; i += size) groups.push(order.slice(i, i + size))
  if (groups.length > 1 && (groups.at(-1)?.length ?? 0) < 2) {
    const last = groups.pop() as string[]
    groups.at(-1)?.push(...last)
  }
  return groups
}
