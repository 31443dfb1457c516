/**
 * Custom scheduling functions shipped by a bundle (`schedule: { name: 'bundle:<export>' }`): the
 * new class's bundle exports the SF, which runs in a worker thread of its own on a read-only
 * snapshot of the fleet view. The vm watchdog inside the worker cuts off an SF that loops; a
 * worker that does not answer at all (a bundle whose top level never returns, an SF that
 * escapes the watchdog) is ended from here. Either way the evaluation counts as "wait" and is
 * reported, and neither the node's main thread nor its app's worker is held up.
 *
 * @packageDocumentation
 */
import { Worker } from 'node:worker_threads'
import { logger } from '@libp2p/logger'
import { workerExecArgv } from '../host/index.ts'
import { ScheduleFailedError, ScheduleTimeoutError, UnknownScheduleError } from './errors.ts'
import type { Evaluation } from './evaluate.ts'
import type { ControlState, PeerStatus, ScheduleDecision, ScheduleInput, ScheduleParams, SelfView } from './types.ts'

const log = logger('molt:schedule:custom')

const HERE = import.meta.url
const SF_WORKER_URL = new URL(HERE.endsWith('.ts') ? './sf-worker.ts' : './sf-worker.js', HERE)

/** The prefix of a manifest's schedule name that names an export of the new class's bundle. */
export const BUNDLE_SCHEDULE_PREFIX = 'bundle:'

/** @internal what the worker is started with */
export interface SfWorkerData {
  url: string
  exportName: string
}

/** @internal a snapshot of an SF's input that crosses to the worker */
export interface SfInput {
  self: SelfView
  params: ScheduleParams
  now: number
  control: ControlState
  /** every record the SF may `get`: replicas, servers and contacts */
  records: PeerStatus[]
  /** the peers `contacts()` returns */
  contacts: string[]
}

/** @internal one evaluation request */
export interface SfRequest {
  id: number
  seed: number
  timeoutMs: number
  input: SfInput
}

/** @internal what the worker answers */
export type SfResponse =
  | { ready: true }
  | { failed: { name: string, message: string } }
  | { id: number, decision: ScheduleDecision, error?: { name: string, message: string } }

/**
 * Options of {@link createBundleSchedule}.
 */
export interface BundleScheduleInit {
  /** the entry module URL of the bundle that exports the SF (`AppHost.moduleUrl`) */
  url: string
  /** the export's name (the part after `bundle:`) */
  exportName: string
  /** the rollout's seed: the worker's random source is seeded with it and the node's peer id */
  seed: number
  /**
   * Time budget of one evaluation, in milliseconds; past it the vm watchdog interrupts the SF.
   *
   * @default 50
   */
  timeoutMs?: number
  /**
   * How long the worker may take to start and load the bundle before it is ended.
   *
   * @default 30000
   */
  loadTimeoutMs?: number
  /**
   * How long past `timeoutMs` an evaluation may take to be answered before the worker is ended
   * (the watchdog inside it normally answers at `timeoutMs`; a crowded machine can delay the
   * answer by seconds, and ending the worker then would only cost a restart).
   *
   * @default 10000
   */
  graceMs?: number
  /**
   * After the worker was ended, wait this long before starting a new one.
   *
   * @default 5000
   */
  restartMs?: number
  /**
   * The worker's heap cap, in MiB.
   *
   * @default 64
   */
  memoryMb?: number
}

/**
 * A custom SF running in its own worker.
 */
export interface BundleSchedule {
  /** Runs the SF once on a snapshot of `input`. Never rejects: a failure is `wait` with the error. */
  evaluate(input: ScheduleInput): Promise<Evaluation>
  /** Ends the worker. */
  close(): Promise<void>
}

/** Splits `bundle:<export>`; undefined for any other schedule name. */
export function bundleScheduleExport (name: string): string | undefined {
  if (!name.startsWith(BUNDLE_SCHEDULE_PREFIX)) return undefined
  const exportName = name.slice(BUNDLE_SCHEDULE_PREFIX.length)
  return /^[A-Za-z_$][A-Za-z0-9_$]{0,63}$/.test(exportName) ? exportName : undefined
}

function wait (error: ScheduleFailedError | ScheduleTimeoutError): Evaluation {
  return { decision: { decision: 'wait', reason: error.message }, error }
}

/** A snapshot of what an SF may read: only plain data crosses to the worker. */
function snapshot (input: ScheduleInput): SfInput {
  const records = new Map<string, PeerStatus>()
  for (const peer of [...input.self.replicas, ...input.self.servers]) {
    const r = input.view.get(peer)
    if (r != null) records.set(peer, r)
  }
  const contacts = input.view.contacts()
  for (const r of contacts) records.set(r.peer, r)
  return {
    self: input.self,
    params: input.params,
    now: input.now,
    control: input.view.control,
    records: [...records.values()],
    contacts: contacts.map(r => r.peer)
  }
}

class WorkerSchedule implements BundleSchedule {
  private worker?: Worker
  private ready?: Promise<void>
  private readonly pending = new Map<number, (response: Extract<SfResponse, { id: number }>) => void>()
  private nextId = 0
  private endedAt = 0
  private loadError?: ScheduleFailedError
  private closed = false
  private readonly timeoutMs: number
  private readonly graceMs: number
  private readonly loadTimeoutMs: number
  private readonly restartMs: number

  private readonly init: BundleScheduleInit

  constructor (init: BundleScheduleInit) {
    this.init = init
    this.timeoutMs = init.timeoutMs ?? 50
    this.graceMs = init.graceMs ?? 10_000
    this.loadTimeoutMs = init.loadTimeoutMs ?? 30_000
    this.restartMs = init.restartMs ?? 5000
  }

  private start (): Promise<void> {
    const worker = new Worker(SF_WORKER_URL, {
      workerData: { url: this.init.url, exportName: this.init.exportName } satisfies SfWorkerData,
      execArgv: workerExecArgv(SF_WORKER_URL),
      resourceLimits: { maxOldGenerationSizeMb: this.init.memoryMb ?? 64 },
      stdout: true,
      stderr: true
    })
    this.worker = worker
    worker.unref()
    // whatever the SF prints is dropped: it has no business writing to the node's output
    worker.stdout.resume()
    worker.stderr.resume()
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (message: SfResponse) => {
        if ('ready' in message) {
          resolve()
        } else if ('failed' in message) {
          const error = message.failed.name === 'UnknownScheduleError'
            ? new UnknownScheduleError(message.failed.message)
            : new ScheduleFailedError(`the bundle could not be loaded: ${message.failed.message}`)
          reject(error)
        } else {
          this.pending.get(message.id)?.(message)
        }
      })
      worker.on('error', (err) => {
        log('the schedule worker failed - %e', err)
        reject(new ScheduleFailedError(`the schedule worker failed: ${err.message}`))
        this.end()
      })
      worker.on('exit', () => {
        reject(new ScheduleFailedError('the schedule worker ended'))
        if (this.worker === worker) this.end()
      })
    })
  }

  /** Ends the worker; what waits on it is answered by its own timer. */
  private end (): void {
    const worker = this.worker
    this.worker = undefined
    this.ready = undefined
    this.endedAt = Date.now()
    void worker?.terminate().catch(() => {})
  }

  async evaluate (input: ScheduleInput): Promise<Evaluation> {
    if (this.closed) return wait(new ScheduleFailedError('the custom schedule was closed'))
    if (this.loadError != null) return wait(this.loadError)
    if (this.worker == null) {
      if (Date.now() - this.endedAt < this.restartMs) {
        return wait(new ScheduleTimeoutError('the custom schedule was ended for not answering; it restarts shortly'))
      }
      this.ready = this.start()
      this.ready.catch(() => {})
    }
    const deadline = this.timeoutMs + this.graceMs
    let timer: ReturnType<typeof setTimeout> | undefined
    const expiry = (ms: number): Promise<'expired'> => new Promise<'expired'>(resolve => {
      clearTimeout(timer)
      timer = setTimeout(() => { resolve('expired') }, ms)
    })
    try {
      const loaded = await Promise.race([this.ready!.then(() => 'ready' as const), expiry(this.loadTimeoutMs)])
      if (loaded === 'expired') {
        this.end()
        return wait(new ScheduleTimeoutError(`the bundle exporting the custom schedule did not load within ${this.loadTimeoutMs} ms; its worker was ended`))
      }
      const expired = expiry(deadline)
      const id = ++this.nextId
      const answered = new Promise<Extract<SfResponse, { id: number }>>(resolve => { this.pending.set(id, resolve) })
      this.worker!.postMessage({ id, seed: this.init.seed, timeoutMs: this.timeoutMs, input: snapshot(input) } satisfies SfRequest)
      const response = await Promise.race([answered, expired])
      this.pending.delete(id)
      if (response === 'expired') {
        this.end()
        return wait(new ScheduleTimeoutError(`the custom schedule did not answer within ${deadline} ms; its worker was ended`))
      }
      if (response.error != null) {
        const error = response.error.name === 'ScheduleTimeoutError' ? new ScheduleTimeoutError(response.error.message) : new ScheduleFailedError(response.error.message)
        return { decision: response.decision, error }
      }
      return { decision: response.decision }
    } catch (err) {
      // the bundle failed to load: it will not load better next time (its bytes are fixed by
      // the signed manifest)
      const error = err instanceof UnknownScheduleError || err instanceof ScheduleFailedError ? err : new ScheduleFailedError(String(err))
      if (!(err instanceof ScheduleFailedError && /worker (failed|ended)/.test(err.message))) {
        this.loadError = error instanceof UnknownScheduleError ? new ScheduleFailedError(error.message) : error
      }
      this.end()
      return wait(error instanceof UnknownScheduleError ? new ScheduleFailedError(error.message) : error)
    } finally {
      clearTimeout(timer)
    }
  }

  async close (): Promise<void> {
    this.closed = true
    const worker = this.worker
    this.worker = undefined
    await worker?.terminate().catch(() => {})
  }
}

/**
 * Starts nothing yet: the worker starts at the first evaluation (and again after it was ended,
 * at most once per `restartMs`).
 */
export function createBundleSchedule (init: BundleScheduleInit): BundleSchedule {
  return new WorkerSchedule(init)
}
