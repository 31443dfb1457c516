/**
 * What the launcher and its members (chord nodes and clients) say to each other: over the
 * `child_process` IPC channel of a node process, or over an in-memory channel when every member
 * runs in the launcher's process (`--in-process`). Every message is plain JSON-compatible data.
 *
 * The launcher sends one `start`, then requests (`{ type: 'request', id, request }`), each
 * answered by one `response` with the same id. The member pushes `ready`, periodic `status`,
 * lifecycle `event`s and, for clients, batches of `ops`.
 *
 * @packageDocumentation
 */
import type { GenesisConfigJSON, UpgradePhase } from '../src/index.ts'

/** A write stamp of the Chord example: last writer wins by `[t, writer]`. */
export type Stamp = [number, string]

/** Which kind of member. */
export type Role = 'node' | 'client'

/** How a member is started (again after a kill, with the same data). */
export interface MemberConfig {
  /** `n03`, `c1`: the launcher's name for it */
  name: string
  role: Role
  /** the genesis class it runs */
  class: string
  genesis: GenesisConfigJSON
  /** its own data directory (a node process); absent in-process */
  dataDir?: string
  listen: string[]
  bootstrap: string[]
  /** bundle directories to pack and serve from the start */
  pack: string[]
  /** open the admin socket in the data directory (so `molt status --data` works) */
  admin: boolean
  /** how often it pushes its status, ms */
  statusMs: number
  /** the fleet view's timing */
  fleet: { announceMs: number, evalEveryMs: number }
  /** how many of its connected peers a node that fetched a bundle expects to announce it in the DHT */
  announcers: number
  /** the upgrade manager's retry period, ms */
  retryMs: number
  /** what its fleet view counts, once the launcher assigned it (kept across restarts) */
  counted?: { group?: string, replicas?: string[], roster?: string[] }
}

/** A member's status, pushed every `statusMs` and after every lifecycle event. */
export interface MemberStatus {
  /** when (ms since the epoch) */
  at: number
  /** the manifest chain's head version */
  head: number
  /** the system version the app runs */
  version: number
  class: string
  /** the upgrade in progress */
  upgrading?: { version: number, phase: UpgradePhase }
  /** the phase of its own status record (running, waiting, intent, upgrading, failed, halted) */
  fleetPhase: string
  /** open connections */
  connections: number
  /** a fork proof halted the rollout here */
  halted: boolean
  /** rollout control applied here */
  paused: boolean
  aborted: boolean
  /** versions that failed here */
  bad: number[]
  /** resident set size now and its peak (VmHWM), MB */
  rssMb: number
  peakRssMb: number
  /** CPU time the process has used since it started (every thread, app workers included), ms; 0 in-process */
  cpuMs: number
}

/** A lifecycle event of a member. */
export type MemberEvent =
  | { kind: 'manifest', at: number, version: number }
  | { kind: 'phase', at: number, version: number, phase: UpgradePhase }
  | { kind: 'completed', at: number, from: number, to: number }
  | { kind: 'advanced', at: number, from: number, to: number }
  | { kind: 'rolled-back', at: number, version: number, error: string }
  | { kind: 'postponed', at: number, version: number, error: string }
  | { kind: 'schedule-error', at: number, version: number, error: string }
  | { kind: 'halted', at: number, version: number }
  | { kind: 'control', at: number, seq: number }

/** How one client op ended. */
export type OpOutcome = 'ok' | 'failed' | 'refused' | 'untyped'

/** One client op, as the workload measured it. */
export interface OpSample {
  kind: 'put' | 'get' | 'delete'
  /** start and end, ms since the epoch */
  start: number
  end: number
  outcome: OpOutcome
  /** attempts made (1 = no retry) */
  attempts: number
  /** the typed failure's name when it did not succeed (the last one) */
  error?: string
}

/** One write a client made, acknowledged or not. */
export interface WriteRecord {
  key: string
  kind: 'put' | 'delete'
  /** the value put (unique per write) */
  value?: string
  /** the acknowledged stamp */
  stamp?: Stamp
  /**
   * `acked`: acknowledged with `stamp`; `uncertain`: not acknowledged, so it may or may not have
   * been executed (the client object may have reached a replica before a failure): the check
   * accepts its value only where it is newer than every acknowledged write.
   */
  status: 'acked' | 'uncertain'
  start: number
  end: number
}

/** What a client's workload does. */
export interface WorkloadPlan {
  /** its own keys (each written by this client only) */
  keys: string[]
  /** keys every client writes (concurrent writes, last writer wins) */
  shared: string[]
  /** concurrent loops; own keys are split between them, so one key's ops are sequential */
  lanes: number
  /** ops per second per lane at most */
  ratePerLane: number
  /** the deadline of one op, retries included, ms */
  deadlineMs: number
  /** the system version from which this client's object has `delete` */
  deleteFromVersion: number
  /** seed of its random choices */
  seed: number
}

/** What the workload recorded, returned when it stops. */
export interface WorkloadRecord {
  client: string
  writer?: string
  writes: WriteRecord[]
}

/** A key read back after the system quiesced. */
export type ReadBack =
  | { key: string, ok: true, value: string | null, stamp: Stamp | null }
  | { key: string, ok: false, error: string }

/** The requests a member answers, and what each returns. */
export interface RequestMap {
  /** the Chord node's `info([])`, called through its own layer */
  info: { request: Record<string, never>, response: unknown }
  /** packs bundle directories (stores and provides them) */
  pack: { request: { dirs: string[] }, response: { cids: string[] } }
  /** packs bundle directories, then publishes the signed manifest (base64) */
  publish: { request: { manifest: string, pack: string[] }, response: { verdict: string, cid: string } }
  /** denies connections to these peers and closes the open ones */
  partition: { request: { deny: string[] }, response: { closed: number } }
  /** lifts every denial and dials these addresses */
  heal: { request: { dial: string[] }, response: { dialled: number } }
  /** dials these addresses (best effort) */
  dial: { request: { addresses: string[] }, response: { dialled: number } }
  /** what this member's fleet view holds (diagnosis) */
  view: { request: Record<string, never>, response: Array<{ peer: string, class: string, version: number, target: number, phase: string, source: string, heardMsAgo: number, called: boolean }> }
  /**
   * The peers this member's fleet view counts: its replica group (one-replica-at-a-time) and the
   * upgrader's roster (class-order's `roster` parameter names peers whose records the view
   * must hold: only counted peers' records are kept and pulled)
   */
  counted: { request: { group?: string, replicas?: string[], roster?: string[] }, response: { ok: true } }
  /** starts the client workload */
  'workload-start': { request: { plan: WorkloadPlan }, response: { ok: true } }
  /** stops it after the ops in flight; returns what it recorded */
  'workload-stop': { request: Record<string, never>, response: WorkloadRecord }
  /** reads keys back through the client object */
  verify: { request: { keys: string[], deadlineMs: number }, response: ReadBack[] }
  /** stops the node cleanly; a node process then exits 0 */
  stop: { request: Record<string, never>, response: { ok: true } }
}

/** A request's operation name. */
export type Op = keyof RequestMap

/** A request on the wire. */
export type MemberRequest = { [K in Op]: { op: K } & RequestMap[K]['request'] }[Op]

/** Launcher → member. */
export type ToMember =
  | { type: 'start', config: MemberConfig }
  | { type: 'request', id: number, request: MemberRequest }

/** A typed failure as data. */
export interface WireError {
  name: string
  message: string
}

/** Member → launcher. */
export type FromMember =
  | { type: 'ready', peerId: string, addresses: string[], admin?: string, status: MemberStatus }
  | { type: 'status', status: MemberStatus }
  | { type: 'event', event: MemberEvent }
  | { type: 'ops', ops: OpSample[] }
  | { type: 'response', id: number, ok: true, value: unknown }
  | { type: 'response', id: number, ok: false, error: WireError }
  | { type: 'fatal', error: WireError }

/** One end of a channel: what it sends, and a handler for what it receives. */
export interface Channel<In, Out> {
  send(message: Out): void
  onMessage(handler: (message: In) => void): void
}

/** The member's end. */
export type MemberChannel = Channel<ToMember, FromMember>

/** The launcher's end. */
export type LauncherChannel = Channel<FromMember, ToMember>

/**
 * Two connected in-memory ends, for members in the launcher's process. Messages are delivered
 * asynchronously and structured-cloned, as over IPC, so neither side can share mutable state.
 */
export function memoryChannel (): { launcher: LauncherChannel, member: MemberChannel } {
  const toMember: Array<(m: ToMember) => void> = []
  const toLauncher: Array<(m: FromMember) => void> = []
  const deliver = <T>(handlers: Array<(m: T) => void>, message: T): void => {
    const copy = structuredClone(message)
    queueMicrotask(() => { for (const h of handlers) h(copy) })
  }
  return {
    launcher: { send: (m) => { deliver(toMember, m) }, onMessage: (h) => { toLauncher.push(h) } },
    member: { send: (m) => { deliver(toLauncher, m) }, onMessage: (h) => { toMember.push(h) } }
  }
}

/** An error as data. */
export function wireError (err: unknown): WireError {
  if (err instanceof Error) {
    const remoteName = (err as Error & { remoteName?: unknown }).remoteName
    return { name: err.name === 'RemoteError' && typeof remoteName === 'string' ? remoteName : err.name, message: err.message }
  }
  return { name: 'Error', message: String(err) }
}
