/**
 * Consulting an SF on a running node: on every change of the fleet view and periodically, until it
 * says go. What the SF asks to announce (an intent, an acknowledgement, a halt) goes into the
 * node's status record. The upgrade manager drives the upgrade itself; this only answers "when".
 *
 * @packageDocumentation
 */
import { logger } from '@libp2p/logger'
import { evaluateSchedule, type Evaluation } from './evaluate.ts'
import type { createBundleSchedule } from './custom.ts'
import { seededRandom } from './random.ts'
import type { NetworkFleetView } from './fleet.ts'
import type { ScheduleDecision, ScheduleFunction, ScheduleInput, ScheduleParams, SelfView } from './types.ts'

const log = logger('molt:schedule')

/**
 * Options of {@link waitForSchedule}.
 */
export interface WaitForScheduleOptions {
  /** the node's fleet view */
  view: NetworkFleetView
  /** the SF, run here under the vm watchdog (or unguarded when `trusted`) */
  schedule?: ScheduleFunction
  /**
   * Runs the SF elsewhere instead of `schedule` (a custom SF in its own worker:
   * {@link createBundleSchedule}); must never reject.
   */
  evaluate?: (input: ScheduleInput) => Promise<Evaluation>
  /** the manifest's schedule parameters */
  params: ScheduleParams
  /** the version being scheduled */
  target: number
  /** the rollout's seed (e.g. from the manifest's CID) */
  seed: number
  /**
   * Whether the SF is trusted code (a built-in), which skips the vm watchdog.
   *
   * @default false
   */
  trusted?: boolean
  /**
   * Time budget of one evaluation.
   *
   * @default 50
   */
  timeoutMs?: number
  /**
   * Ask the SF at least this often, even if nothing changes.
   *
   * @default 1000
   */
  evalEveryMs?: number
  /**
   * The app's privileged observers, read-only to the SF.
   *
   * @default {}
   */
  observers?: () => Readonly<Record<string, unknown>>
  /**
   * Called with every evaluation whose SF failed (threw, timed out, bad answer); it counts as
   * wait.
   *
   * @default logs once per distinct message
   */
  onError?: (evaluation: Evaluation) => void
  /** called after every evaluation */
  onDecision?: (decision: ScheduleDecision) => void
  /**
   * Clock, in milliseconds.
   *
   * @default Date.now
   */
  now?: () => number
  /** aborts the wait */
  signal?: AbortSignal
}

/**
 * Announces that this node waits for `target`, then consults the SF on every view change and
 * every `evalEveryMs` until it says upgrade; resolves with that decision. Intents, deferrals and
 * halts the SF asks for are published in the node's record on the way. Rejects when the signal
 * aborts.
 */
export async function waitForSchedule (options: WaitForScheduleOptions): Promise<ScheduleDecision> {
  const { view, schedule, params, target } = options
  if (schedule == null && options.evaluate == null) {
    throw new TypeError('waitForSchedule: give schedule or evaluate')
  }
  const now = options.now ?? Date.now
  const since = now()
  const random = seededRandom(options.seed, view.own().peer)
  const errors = new Set<string>()
  const onError = options.onError ?? ((e: Evaluation) => {
    const message = e.error?.message ?? ''
    if (!errors.has(message) && errors.size < 64) {
      errors.add(message)
      log.error('the schedule of version %d failed, counted as wait: %s', target, message)
    }
  })
  options.signal?.throwIfAborted()
  if (view.own().target !== target || view.own().phase === 'running') {
    await view.update({ target, phase: 'waiting' })
  }

  return await new Promise<ScheduleDecision>((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    let running = false
    let again = false
    let done = false
    const finish = (): void => {
      done = true
      clearTimeout(timer)
      view.events.removeEventListener('status:changed', onChange)
      options.signal?.removeEventListener('abort', onAbort)
    }
    const onAbort = (): void => {
      finish()
      reject(options.signal?.reason)
    }
    const onChange = (): void => { void step() }
    const arm = (at?: number): void => {
      clearTimeout(timer)
      const every = options.evalEveryMs ?? 1000
      const delay = at != null ? Math.min(Math.max(at - now(), 0), every) : every
      timer = setTimeout(() => { void step() }, delay)
    }
    const step = async (): Promise<void> => {
      if (done) return
      if (running) { again = true; return }
      running = true
      try {
        do {
          again = false
          const own = view.own()
          const intent = view.intent()
          const counted = view.counted()
          const self: SelfView = {
            peer: own.peer,
            class: own.class,
            version: own.version,
            target,
            phase: own.phase,
            seq: own.seq,
            ...(intent != null ? { intentSeq: intent.seq, intentAt: intent.at } : {}),
            since,
            tags: own.tags,
            replicas: counted.replicas,
            servers: counted.servers,
            observers: options.observers?.() ?? {}
          }
          const input = { self, view, params, now: now(), random }
          const evaluation = options.evaluate != null
            ? await options.evaluate(input)
            : evaluateSchedule(schedule!, input, { guard: options.trusted !== true, timeoutMs: options.timeoutMs ?? 50 })
          if (done) return
          if (evaluation.error != null) onError(evaluation)
          const d = evaluation.decision
          options.onDecision?.(d)
          if (done) return
          if (d.decision === 'upgrade') {
            finish()
            resolve(d)
            return
          }
          const phase = d.halt != null ? 'halted' : d.intent === true ? 'intent' : (d.intent === false || own.phase === 'halted' || own.phase === 'running') ? 'waiting' : own.phase
          const defer = d.defer ?? null
          const sameDefer = (own.defer == null && defer == null) || (own.defer != null && defer != null && own.defer.peer === defer.peer && own.defer.seq === defer.seq)
          if (phase !== own.phase || !sameDefer) {
            await view.update({ phase, defer, target })
            again = true
          }
          arm(d.retryAt)
        } while (again && !done)
      } catch (err) {
        if (!done) {
          finish()
          reject(err)
        }
      } finally {
        running = false
      }
    }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    view.events.addEventListener('status:changed', onChange)
    void step()
  })
}
