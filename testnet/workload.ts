/**
 * The client workload: puts, gets and deletes of known values through a chord-client object,
 * continuously, each op with a deadline and retries on the layer's retryable failures. The
 * client keeps its own record of every write (acknowledged with the stamp the system gave it, or
 * not), which is what the lost-write check reads after the system quiesced.
 *
 * @packageDocumentation
 */
import { logger } from '@libp2p/logger'
import { isRetryable } from '../src/index.ts'
import { wireError, type OpOutcome, type OpSample, type ReadBack, type Stamp, type WorkloadPlan, type WorkloadRecord, type WriteRecord } from './ipc.ts'

const log = logger('molt:testnet:workload')

/** Failures that mean "the correctness criteria refused this call", not "try again". */
export const REFUSED_ERRORS: ReadonlySet<string> = new Set(['SimulationRefusedError', 'VersionRetiredError', 'VersionUnknownError'])

/**
 * How the workload calls its client object: `layer.call(self, method, args, { deadlineMs })`.
 */
export type CallClient = (method: string, args: unknown[], options: { deadlineMs: number, signal: AbortSignal }) => Promise<unknown>

/** The name a failure is known by: a `RemoteError`'s `remoteName`, else its own. */
export function failureName (err: unknown): string {
  return wireError(err).name
}

/**
 * The host's typed failures of a call that did not finish: the app did not answer within the
 * host's call budget (`HostTimeoutError`), or its worker crashed and restarts
 * (`WorkerCrashedError`). Through the layer they arrive as `RemoteError`s with that `remoteName`;
 * like `CallTimeoutError` the call may or may not have executed, and another attempt may succeed,
 * so the workload retries them (the Chord example's client does the same).
 */
export const HOST_RETRYABLE: ReadonlySet<string> = new Set(['HostTimeoutError', 'WorkerCrashedError'])

/** Whether a failure (by name) is retryable, refused, or of no typed kind. */
export function classify (name: string): 'retryable' | 'refused' | 'untyped' {
  const probe = new Error(name)
  probe.name = name
  if (isRetryable(probe) || HOST_RETRYABLE.has(name)) return 'retryable'
  if (REFUSED_ERRORS.has(name)) return 'refused'
  return 'untyped'
}

/** A stamp as the Chord example returns it, or undefined when it is not one. */
export function asStamp (value: unknown): Stamp | undefined {
  if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'number' && typeof value[1] === 'string') {
    return [value[0], value[1]]
  }
  return undefined
}

/** Orders stamps: last writer wins by `[t, writer]`. */
export function compareStamps (a: Stamp, b: Stamp): number {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1
  return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0
}

/**
 * A small seeded generator (mulberry32). src/schedule/random.ts has the same one, but it is not
 * exported from src/index.ts, and the testnet uses molt's public API only.
 */
export function seeded (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6D2B79F5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Resolves after `ms`, or rejects when the signal aborts. */
export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const done = (): void => { signal?.removeEventListener('abort', onAbort); resolve() }
    const timer = setTimeout(done, Math.max(0, ms))
    const onAbort = (): void => { clearTimeout(timer); reject(signal?.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** The result of one op with retries: it succeeded when `outcome` is `ok`. */
interface Attempted {
  value?: unknown
  attempts: number
  outcome: OpOutcome
  error?: string
}

/**
 * Turns a success into an untyped failure: the reply breaks the example's contract (an
 * acknowledgement without a stamp, a read that is not `{ value, stamp } | null`).
 */
function malformed (a: Attempted): void {
  a.outcome = 'untyped'
  a.error = 'MalformedReplyError'
}

/**
 * One client's workload. `start` runs it until `stop`; samples go to `onOps` in batches.
 */
export class Workload {
  private readonly writes: WriteRecord[] = []
  private readonly pending: OpSample[] = []
  private readonly stopping = new AbortController()
  private lanes: Array<Promise<void>> = []
  private flushTimer: ReturnType<typeof setInterval> | undefined
  private seq = 0
  private writer: string | undefined

  private readonly client: string
  private readonly call: CallClient
  /** the system version the client's object runs now */
  private readonly version: () => number
  private readonly onOps: (ops: OpSample[]) => void

  constructor (client: string, call: CallClient, version: () => number, onOps: (ops: OpSample[]) => void) {
    this.client = client
    this.call = call
    this.version = version
    this.onOps = onOps
  }

  /** Starts the lanes. */
  start (plan: WorkloadPlan): void {
    const random = seeded(plan.seed)
    const lanes = Math.max(1, plan.lanes)
    for (let l = 0; l < lanes; l++) {
      const own = plan.keys.filter((_, i) => i % lanes === l)
      // shared keys are written by every lane of every client: concurrent writes by design
      this.lanes.push(this.lane(plan, own, seeded(Math.floor(random() * 2 ** 31))))
    }
    this.flushTimer = setInterval(() => { this.flush() }, 250)
  }

  /** Stops after the ops in flight and returns the record. */
  async stop (): Promise<WorkloadRecord> {
    this.stopping.abort()
    await Promise.allSettled(this.lanes)
    this.lanes = []
    if (this.flushTimer != null) clearInterval(this.flushTimer)
    this.flushTimer = undefined
    this.flush()
    return { client: this.client, ...(this.writer != null ? { writer: this.writer } : {}), writes: [...this.writes] }
  }

  private flush (): void {
    if (this.pending.length === 0) return
    this.onOps(this.pending.splice(0))
  }

  private async lane (plan: WorkloadPlan, own: string[], random: () => number): Promise<void> {
    const signal = this.stopping.signal
    const gap = 1000 / Math.max(0.001, plan.ratePerLane)
    while (!signal.aborted) {
      const began = performance.now()
      const sharedOp = plan.shared.length > 0 && (own.length === 0 || random() < 0.1)
      const key = sharedOp
        ? plan.shared[Math.floor(random() * plan.shared.length)] as string
        : own[Math.floor(random() * own.length)] as string
      const r = random()
      const canDelete = this.version() >= plan.deleteFromVersion
      if (sharedOp || r < 0.45) {
        await this.put(key, plan)
      } else if (r < 0.85 || !canDelete) {
        await this.get(key, plan)
      } else {
        await this.delete(key, plan)
      }
      const rest = gap - (performance.now() - began)
      if (rest > 0) {
        try { await sleep(rest, signal) } catch { break }
      }
    }
  }

  /** Runs an op with retries on retryable failures until its deadline. */
  private async attempt (method: string, args: unknown[], deadlineMs: number): Promise<Attempted> {
    const until = Date.now() + deadlineMs
    let attempts = 0
    let last = ''
    while (true) {
      attempts++
      const remaining = until - Date.now()
      // the workload's own deadline of the attempt: the layer's, and a second of grace
      const backstop = AbortSignal.timeout(Math.max(1, remaining) + 1000)
      try {
        const value = await this.call(method, args, { deadlineMs: Math.max(1, remaining), signal: backstop })
        return { value, attempts, outcome: 'ok' }
      } catch (err) {
        // the backstop fired: the op's deadline passed with no answer, as the layer's own deadline
        // reports it; the backstop wins that race only when the node's event loop runs so late
        // (100 nodes in one process) that the call reached the layer a second after it was made
        last = backstop.aborted ? 'CallTimeoutError' : failureName(err)
        const kind = classify(last)
        if (kind !== 'retryable') {
          log('%s %o: %s (%s)', method, args[0], last, (err as Error).message)
          return { attempts, outcome: kind, error: last }
        }
      }
      const backoff = Math.min(25 * 2 ** Math.min(attempts, 5), 400) * (0.5 + Math.random())
      if (Date.now() + backoff >= until) {
        return { attempts, outcome: 'failed', error: last }
      }
      await sleep(backoff)
    }
  }

  private sample (kind: OpSample['kind'], start: number, a: Attempted): void {
    this.pending.push({ kind, start, end: Date.now(), outcome: a.outcome, attempts: a.attempts, ...(a.error != null ? { error: a.error } : {}) })
  }

  private async put (key: string, plan: WorkloadPlan): Promise<void> {
    const value = `${this.client}.${++this.seq}`
    const stamp = await this.write('put', key, [key, value], plan)
    if (stamp != null) this.writer ??= stamp[1]
  }

  private async delete (key: string, plan: WorkloadPlan): Promise<void> {
    await this.write('delete', key, [key], plan)
  }

  /** A put or delete: records it (acknowledged with its stamp, or uncertain); returns the stamp. */
  private async write (kind: 'put' | 'delete', key: string, args: [string, string] | [string], plan: WorkloadPlan): Promise<Stamp | undefined> {
    const start = Date.now()
    const a = await this.attempt(kind, args, plan.deadlineMs)
    const stamp = a.outcome === 'ok' ? asStamp((a.value as { stamp?: unknown } | null)?.stamp) : undefined
    if (a.outcome === 'ok' && stamp == null) malformed(a)
    const value = args[1]
    this.writes.push({ key, kind, ...(value != null ? { value } : {}), ...(stamp != null ? { stamp } : {}), status: a.outcome === 'ok' ? 'acked' : 'uncertain', start, end: Date.now() })
    this.sample(kind, start, a)
    return stamp
  }

  private async get (key: string, plan: WorkloadPlan): Promise<void> {
    const start = Date.now()
    const a = await this.attempt('get', [key], plan.deadlineMs)
    if (a.outcome === 'ok' && parseRead(key, a.value) == null) malformed(a)
    this.sample('get', start, a)
  }

  /**
   * Reads keys back (after the workload stopped and the system quiesced), a few at a time, each
   * with retries until `deadlineMs`.
   */
  async readBack (keys: string[], deadlineMs: number): Promise<ReadBack[]> {
    const out: ReadBack[] = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < keys.length) {
        const key = keys[next++] as string
        const a = await this.attempt('get', [key], deadlineMs)
        const read = a.outcome === 'ok' ? parseRead(key, a.value) : undefined
        out.push(read ?? { key, ok: false, error: a.error ?? 'MalformedReplyError' })
      }
    }
    await Promise.all(Array.from({ length: 4 }, worker))
    return out
  }
}

/** `{ value, stamp } | null` → a read-back, or undefined when malformed. */
export function parseRead (key: string, value: unknown): ReadBack | undefined {
  if (value == null) return { key, ok: true, value: null, stamp: null }
  if (typeof value !== 'object') return undefined
  const v = value as { value?: unknown, stamp?: unknown }
  if (v.value === null || v.value === undefined) return { key, ok: true, value: null, stamp: asStamp(v.stamp) ?? null }
  const stamp = asStamp(v.stamp)
  if (typeof v.value !== 'string' || stamp == null) return undefined
  return { key, ok: true, value: v.value, stamp }
}
