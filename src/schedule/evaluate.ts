/**
 * Running a scheduling function safely: the SF gets frozen, read-only views; one that throws,
 * returns something that is not a decision, or runs past its time budget is cut off, counts as
 * "wait" and is reported. Synchronous loops are interrupted (the SF runs under `node:vm`'s
 * watchdog), so this is usable from the host's isolated worker as well as in-process.
 */
import { Script, createContext, type Context } from 'node:vm'
import { ScheduleFailedError, ScheduleTimeoutError } from './errors.ts'
import type { ControlState, Deferral, FleetView, PeerStatus, ScheduleDecision, ScheduleFunction, ScheduleInput, SelfView } from './types.ts'

/**
 * Options of {@link evaluateSchedule}.
 */
export interface EvaluateOptions {
  /**
   * Time budget of one call, in milliseconds. Past it the SF is interrupted.
   *
   * @default 50
   */
  timeoutMs?: number

  /**
   * Run under the vm watchdog, on frozen copies of the input. Built-in SFs are trusted and may
   * skip both (the simulator does); their answer is still checked.
   *
   * @default true
   */
  guard?: boolean
}

/**
 * The outcome of one evaluation: always a usable decision, plus the error when the SF was cut off.
 */
export interface Evaluation {
  /** the SF's decision, or `wait` when it failed */
  decision: ScheduleDecision
  /** why the SF's answer was not used */
  error?: ScheduleFailedError | ScheduleTimeoutError
}

/** Freezes a value and everything reachable from it (plain data only). */
export function deepFreeze<T> (value: T): T {
  if (value != null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) {
      deepFreeze(v)
    }
  }
  return value
}

function frozenStatus (r: PeerStatus | undefined): PeerStatus | undefined {
  if (r == null || Object.isFrozen(r)) return r
  return deepFreeze({ ...r, tags: { ...r.tags }, ...(r.defer != null ? { defer: { ...r.defer } } : {}) })
}

/**
 * A read-only facade of a fleet view: only its query methods, every answer frozen, nothing of the
 * implementation reachable through it.
 */
export function readonlyView (view: FleetView): FleetView {
  return Object.freeze({
    get: (peer: string) => frozenStatus(view.get(String(peer))),
    contacts: () => Object.freeze(view.contacts().map(r => frozenStatus(r) as PeerStatus)),
    get control (): ControlState { return Object.freeze({ ...view.control }) }
  })
}

/** A frozen copy of a self view. */
export function readonlySelf (self: SelfView): SelfView {
  return deepFreeze(structuredCloneSafe(self))
}

function structuredCloneSafe<T> (value: T): T {
  try {
    return structuredClone(value)
  } catch {
    return { ...value }
  }
}

const MAX_REASON = 256

/**
 * Checks an SF's answer and copies it into a fresh decision; throws `ScheduleFailedError` when it
 * is not one.
 */
export function validateDecision (value: unknown): ScheduleDecision {
  if (value == null || typeof value !== 'object' || typeof (value as { then?: unknown }).then === 'function') {
    throw new ScheduleFailedError('the schedule did not return a decision object (it must be synchronous)')
  }
  const v = value as Record<string, unknown>
  if (v.decision !== 'wait' && v.decision !== 'upgrade') {
    throw new ScheduleFailedError(`decision: expected "wait" or "upgrade", got ${JSON.stringify(v.decision)?.slice(0, 64)}`)
  }
  const out: { -readonly [K in keyof ScheduleDecision]: ScheduleDecision[K] } = { decision: v.decision }
  if (v.reason !== undefined) out.reason = String(v.reason).slice(0, MAX_REASON)
  if (v.intent !== undefined) {
    if (typeof v.intent !== 'boolean') throw new ScheduleFailedError('intent: not a boolean')
    out.intent = v.intent
  }
  if (v.defer !== undefined) {
    const d = v.defer as Partial<Deferral> | null
    if (d == null || typeof d.peer !== 'string' || typeof d.seq !== 'number' || !Number.isSafeInteger(d.seq)) {
      throw new ScheduleFailedError('defer: not { peer, seq }')
    }
    out.defer = { peer: d.peer, seq: d.seq }
  }
  if (v.halt !== undefined) {
    const h = v.halt as { peer?: unknown, reason?: unknown } | null
    if (h == null || typeof h.peer !== 'string') throw new ScheduleFailedError('halt: not { peer, reason }')
    out.halt = { peer: h.peer, reason: String(h.reason ?? '').slice(0, MAX_REASON) }
  }
  if (v.retryAt !== undefined) {
    if (typeof v.retryAt !== 'number' || !Number.isFinite(v.retryAt)) throw new ScheduleFailedError('retryAt: not a finite number')
    out.retryAt = v.retryAt
  }
  return out
}

const CALL = new Script('__molt_sf(__molt_input)', { filename: 'molt-schedule' })
let sandbox: Context | undefined

/**
 * Runs a scheduling function within its budget on read-only views. Never throws: a failure is
 * returned as `wait` with the error.
 */
export function evaluateSchedule (fn: ScheduleFunction, input: ScheduleInput, options: EvaluateOptions = {}): Evaluation {
  const timeoutMs = options.timeoutMs ?? 50
  const safe: ScheduleInput = options.guard === false ? input : Object.freeze({
    self: readonlySelf(input.self),
    view: readonlyView(input.view),
    params: deepFreeze({ ...input.params }),
    now: input.now,
    random: input.random
  })
  let result: unknown
  try {
    if (options.guard === false) {
      result = fn(safe)
    } else {
      sandbox ??= createContext({})
      sandbox.__molt_sf = fn
      sandbox.__molt_input = safe
      try {
        result = CALL.runInContext(sandbox, { timeout: Math.max(1, Math.ceil(timeoutMs)) })
      } finally {
        sandbox.__molt_sf = undefined
        sandbox.__molt_input = undefined
      }
    }
  } catch (err) {
    const e = err as Error & { code?: string }
    const error = e?.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT'
      ? new ScheduleTimeoutError(`the schedule ran past its budget of ${timeoutMs} ms and was cut off`)
      : new ScheduleFailedError(`the schedule threw: ${e instanceof Error ? `${e.name}: ${e.message}` : String(err)}`.slice(0, 512))
    return { decision: { decision: 'wait', reason: error.message }, error }
  }
  try {
    return { decision: validateDecision(result) }
  } catch (err) {
    const error = err as ScheduleFailedError
    return { decision: { decision: 'wait', reason: error.message }, error }
  }
}
