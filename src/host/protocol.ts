/**
 * The messages between the host (main thread) and its worker. Internal: not exported by the
 * package. Values travel by structured clone; errors as `{ name, message }`.
 */
import type { HealthReport, Value } from './model.ts'

/** An error as it crosses the thread boundary. */
export interface WireError {
  name: string
  message: string
  /** true when the app threw it (rather than the host) */
  app?: boolean
}

/** One module the worker imports: a file URL and what to take from it. */
export interface ModuleRef {
  /** file URL of the bundle's entry module */
  url: string
}

/** What a serving worker runs. */
export interface ServeData {
  mode: 'serve'
  /** the molt app API this host offers */
  api: string
  self: { peerId: string, class: string }
  peers: string[]
  current: { version: number, namespace: string, module: ModuleRef }
  /** newest first: the first link calls the current object */
  past: Array<{ from: number, to: number, namespace: string, /** the simulated version's own state, read only */ old: string, module: ModuleRef }>
  /** oldest first: the first link calls the current object */
  future: Array<{ version: number, namespace: string, module: ModuleRef }>
}

/** What a job worker (a TF or an invariant check) runs. */
export interface JobData {
  mode: 'transform' | 'invariants'
  api: string
  module: ModuleRef
  /** run `reverseTransform` instead of `transform` */
  reverse?: boolean
  now?: number
  seed?: number
  /** after the TF, check the bundle's invariants on the state it wrote (the job's result) */
  invariants?: boolean
}

/**
 * A prepared worker: it imports these modules and waits for `begin`. The next version's worker,
 * started before the node goes out of service: it runs the TF, then serves.
 */
export interface StandbyData {
  mode: 'standby'
  api: string
  modules: ModuleRef[]
}

/** The data a worker starts with. */
export type WorkerData = ServeData | JobData | StandbyData

/** Store namespaces a job sees, by role. */
export type StoreRole = 'old' | 'future' | 'next' | 'state'

/** main → worker */
export type ToWorker =
  | { t: 'invoke', id: number, kind: 'current' | 'past' | 'future', version: number, method: string, args: Value[], peer: string, caller: { version: number, class: string } }
  | { t: 'abort', id: number }
  /** a prepared worker's task: a job (answered as `res` id 0, then it waits again) or serving */
  | { t: 'begin', data: ServeData | JobData }
  | { t: 'future', id: number, version: number, namespace: string, module: ModuleRef }
  | { t: 'quiesce', id: number, ms: number }
  | { t: 'health', id: number }
  | { t: 'observe', id: number, name: string, args: Value[] }
  | { t: 'stop', id: number }
  | { t: 'ping', id: number }
  | { t: 'peers', peers: string[] }
  | { t: 'reply', id: number, ok: true, value: unknown }
  | { t: 'reply', id: number, ok: false, error: WireError }

/** Options of an outgoing call as the worker sends them. */
export interface WireCallOptions {
  deadlineMs?: number
  alternatives?: string[]
  object?: string
}

/** worker → main */
export type FromWorker =
  | { t: 'ready' }
  | { t: 'fatal', error: WireError }
  | { t: 'res', id: number, ok: true, value: unknown }
  | { t: 'res', id: number, ok: false, error: WireError }
  | { t: 'pong', id: number }
  | { t: 'call', id: number, peer: string, method: string, args: Value[], options: WireCallOptions, version: number }
  | { t: 'store', id: number, ns: string, op: 'get' | 'put' | 'delete' | 'entries' | 'batch', key?: string, value?: Value, prefix?: string, writes?: Array<{ key: string, value?: Value }> }
  | { t: 'log', version: number, message: string, args: Value[] }

/** What a health request answers: one report per object that has a health check. */
export type HealthAnswer = Array<{ object: string, report: HealthReport }>

/** Serialises an error for the other thread. */
export function toWire (err: unknown, app = false): WireError {
  if (err instanceof Error || (err != null && typeof err === 'object' && 'message' in err)) {
    const e = err as Error
    return { name: String(e.name ?? 'Error'), message: String(e.message), ...(app ? { app } : {}) }
  }
  let message = 'a non-error value was thrown'
  try { message = String(err) } catch {}
  return { name: 'Error', message, ...(app ? { app } : {}) }
}
