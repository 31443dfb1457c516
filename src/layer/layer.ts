/**
 * The upgrade layer (decision 6): a versioned request/response protocol that labels every call
 * with the caller's version and class and every reply with the callee's, dispatches each call to
 * the object of its version (current object, past-SO chain or future-SO chain), and learns of
 * newer versions from the labels it sees.
 *
 * It knows nothing of the manager or the host: the owner gives it an `invoke` callback that runs
 * a call on an object, keeps its {@link LayerState} up to date with {@link UpgradeLayer.update},
 * and listens to its events (`version:seen` feeds the fleet view and catch-up hints,
 * `version:unknown` asks for a future-SO to be installed).
 */
import { AbortError, TimeoutError } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { TypedEventEmitter } from 'main-event'
import { raceSignal } from 'race-signal'
import { InvalidOptionError } from '../overlay/errors.ts'
import { createRequestSessions, protocolId, validateSystemName, type RequestSessions } from '../overlay/index.ts'
import { normaliseState, route, type DispatchState, type DispatchTarget, type LayerState, type Route } from './dispatch.ts'
import {
  CallTimeoutError, errorFromWire, isRetryable, MessageTooLargeError, RemoteError, SimulationRefusedError,
  UnavailableError, UpgradingError, VersionUnknownError
} from './errors.ts'
import { decodeReply, decodeRequest, encodeReply, encodeRequest, MAX_NAME_LENGTH, type RpcReply, type RpcRequest } from './wire.ts'
import type { AbortOptions, Libp2p, PeerId, Startable } from '@libp2p/interface'

const log = logger('molt:layer')

/** The name of the RPC protocol inside the system's protocol ids. */
export const RPC_PROTOCOL_NAME = 'rpc'

/**
 * The RPC protocol id of a system, `/molt/<system>/rpc/2.0.0`. Version 2 carries the calls on
 * request sessions (one long-lived stream per peer); version 1 opened a stream per call.
 */
export function rpcProtocol (system: string): string {
  return protocolId(system, RPC_PROTOCOL_NAME, '2.0.0')
}

/**
 * One call as the owner's `invoke` callback receives it.
 */
export interface InvokeRequest {
  /** the object that must execute it: current, or the past/future SO chain link of a version */
  target: DispatchTarget
  /** which of the node's objects (services), when the caller named one */
  object?: string
  /** the method to call */
  method: string
  /** the arguments, as decoded dag-cbor values */
  args: unknown[]
  /** the calling peer */
  peer: PeerId
  /** the caller's labels */
  caller: { version: number, class: string }
  /** aborts at the call's deadline (minus the reply margin) or when the layer stops */
  signal: AbortSignal
}

/**
 * Runs one call on an object and returns its result, which must be a dag-cbor value (`undefined`
 * is sent as `null`). Throwing an error named `SimulationRefusedError` makes the caller see
 * `SimulationRefusedError`; `UpgradingError` makes it see `UpgradingError`; anything else becomes
 * `RemoteError` carrying the message only.
 */
export type Invoke = (call: InvokeRequest) => unknown

/**
 * The parts of a libp2p node the layer uses.
 */
export interface UpgradeLayerComponents {
  libp2p: Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol'>
}

/**
 * The state a layer starts with; omitted fields take their defaults.
 */
export interface InitialLayerState {
  /** the node's current system version */
  version: number
  /** the node's current class */
  class: string
  /**
   * Calls below this version fail `VersionRetiredError`.
   *
   * @default 0
   */
  minimumVersion?: number
  /**
   * Versions below the current one with a past-SO installed.
   *
   * @default []
   */
  past?: readonly number[]
  /**
   * Versions above the current one with a future-SO installed.
   *
   * @default []
   */
  future?: readonly number[]
  /**
   * Whether the node is quiescing.
   *
   * @default false
   */
  quiescing?: boolean
}

/**
 * Options of the upgrade layer.
 */
export interface UpgradeLayerInit {
  /** the system's name, which scopes the protocol id */
  system: string

  /** what the node runs when the layer is created */
  state: InitialLayerState

  /** runs a call on the object the dispatch rule chose */
  invoke: Invoke

  /**
   * Largest request accepted or sent, in bytes. A larger incoming request is answered
   * `MessageTooLargeError`; a larger outgoing one fails `MessageTooLargeError` before sending.
   *
   * @default 65536
   */
  maxRequestBytes?: number

  /**
   * Largest reply accepted or sent, in bytes. A larger reply value is answered
   * `MessageTooLargeError`; a larger incoming reply fails `MessageTooLargeError`.
   *
   * @default 65536
   */
  maxReplyBytes?: number

  /**
   * Calls from one peer in hand at once (a peer keeps one session to this node); calls beyond it
   * are answered `UnavailableError` without running.
   *
   * @default 32
   */
  maxCallsPerPeer?: number

  /**
   * Calls executing (or waiting for a future-SO) at once on this node, across all connections;
   * calls beyond it are answered `UnavailableError` without running.
   *
   * @default 256
   */
  maxConcurrentCalls?: number

  /**
   * The longest a call may run here, whatever deadline the caller sends, in milliseconds; also
   * the deadline of a request that carries none.
   *
   * @default 10000
   */
  maxCallMs?: number

  /**
   * Time kept back from a call's deadline at the callee so a timeout or `VersionUnknownError`
   * reply reaches the caller before the caller's own deadline passes, in milliseconds (at most
   * half the deadline).
   *
   * @default 100
   */
  replyMarginMs?: number

  /**
   * Deadline of an outgoing call when the caller gives none, in milliseconds.
   *
   * @default 10000
   */
  defaultDeadlineMs?: number

  /**
   * Whether calls run on limited (relayed) connections.
   *
   * @default true
   */
  runOnLimitedConnection?: boolean
}

/**
 * A version label seen on a request or a reply.
 */
export interface VersionSeen {
  /** the peer that carried the label */
  peer: PeerId
  /** its system version */
  version: number
  /** its class */
  class: string
  /** whether the label came on an incoming request or on the reply to an outgoing call */
  source: 'request' | 'reply'
}

/**
 * Events of the upgrade layer.
 */
export interface UpgradeLayerEvents {
  /**
   * A peer's version and class, from every request and every reply (errors included): it feeds
   * the fleet view's cache of recently contacted nodes and the catch-up hints of decision 4.
   */
  'version:seen': CustomEvent<VersionSeen>
  /**
   * A call named a version above the current one with no future-SO installed. Emitted once per
   * version while calls wait for it; the owner pulls the manifest, fetches the bundle and
   * installs the future-SO, then calls {@link UpgradeLayer.update}.
   */
  'version:unknown': CustomEvent<{ peer: PeerId, version: number, class: string }>
  /** a peer sent a malformed or oversized request; it was answered with a typed error */
  'request:rejected': CustomEvent<{ peer: PeerId, reason: string, error: Error }>
}

/**
 * Options of one outgoing call.
 */
export interface CallOptions extends AbortOptions {
  /**
   * The whole call's deadline, retries included, in milliseconds. It is sent to the callee,
   * which bounds its own work (and any wait for a future-SO) by it.
   *
   * @default the layer's `defaultDeadlineMs` (10000)
   */
  deadlineMs?: number

  /**
   * The deadline of one attempt at one peer, in milliseconds, so a peer that hangs leaves time
   * for the alternatives.
   *
   * @default the remaining deadline
   */
  attemptTimeoutMs?: number

  /**
   * Which of the callee's objects (services) to call.
   *
   * @default none: the node's one object
   */
  object?: string

  /**
   * The version label to send.
   *
   * @default the node's current version
   */
  version?: number

  /**
   * The class label to send.
   *
   * @default the node's current class
   */
  class?: string
}

/**
 * The upgrade layer of one node.
 */
export interface UpgradeLayer extends Startable {
  /** the RPC protocol id */
  readonly protocol: string
  /** version labels seen, unknown versions, rejected requests */
  readonly events: TypedEventEmitter<UpgradeLayerEvents>
  /** what the layer believes the node runs */
  readonly state: Readonly<LayerState>
  /** calls executing on an object right now (waits for a future-SO not included) */
  readonly executing: number

  /**
   * Changes the node's state (version, class, minimum supported version, installed SOs,
   * quiescing). Calls waiting for a future-SO are re-dispatched. Throws `InvalidOptionError` on a
   * malformed state, leaving the old one.
   */
  update(patch: Partial<LayerState>): void

  /**
   * Calls `method` at `peers[0]`, labelled with the node's version and class; on a retryable
   * failure (see `isRetryable`) tries the next peer, all within the deadline and the signal.
   * Resolves with the reply's value; rejects with the typed failure of the last attempt,
   * `CallTimeoutError` when the deadline passed first, or the signal's reason when aborted.
   */
  call(peers: PeerId | readonly PeerId[], method: string, args?: readonly unknown[], options?: CallOptions): Promise<unknown>

  /**
   * Resolves once no call is executing on an object: the manager quiesces (`update({
   * quiescing: true })`) and then waits here for in-flight calls to drain (decision 9).
   */
  idle(options?: AbortOptions): Promise<void>
}

const DEFAULT_MAX_BYTES = 65_536

function positive (value: number | undefined, fallback: number, what: string, allowZero = false): number {
  if (value == null) {
    return fallback
  }
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0 || (!allowZero && value === 0)) {
    throw new InvalidOptionError(`${what}: must be a ${allowZero ? 'non-negative' : 'positive'} number (got ${String(value)})`)
  }
  return value
}

interface Deferred {
  promise: Promise<void>
  resolve: () => void
}

function deferred (): Deferred {
  let resolve!: () => void
  const promise = new Promise<void>(r => { resolve = r })
  return { promise, resolve }
}

function isPromiseLike (value: unknown): value is PromiseLike<unknown> {
  return value != null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function'
}

function abortReason (signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new AbortError('the call was aborted')
}

/** setTimeout's largest delay; longer ones would fire at once. */
const MAX_TIMER_MS = 2_147_483_647

/**
 * A signal that aborts after `ms` or when `parent` aborts, whichever is first. Cheaper than
 * `AbortSignal.any` with `AbortSignal.timeout` (tens of microseconds a call on the RPC fast
 * path), it allocates no closures and leaves nothing behind once disposed.
 */
class Deadline {
  private readonly controller = new AbortController()
  private readonly timer: ReturnType<typeof setTimeout>
  private readonly parent: AbortSignal | undefined
  /** whether the timer (not the parent) aborted it */
  timedOut = false

  readonly ms: number

  constructor (ms: number, parent?: AbortSignal) {
    this.ms = ms
    this.parent = parent
    this.timer = setTimeout(fireDeadline, Math.min(Math.max(1, ms), MAX_TIMER_MS), this)
    if (parent != null) {
      if (parent.aborted) {
        this.controller.abort(parent.reason)
      } else {
        parent.addEventListener('abort', this, { once: true })
      }
    }
  }

  get signal (): AbortSignal {
    return this.controller.signal
  }

  /** the timer fired */
  fire (): void {
    this.timedOut = true
    this.controller.abort(new TimeoutError(`deadline of ${this.ms} ms passed`))
  }

  /** the parent aborted (EventListenerObject) */
  handleEvent (): void {
    this.controller.abort(this.parent?.reason)
  }

  /** clears the timer and the parent listener */
  dispose (): void {
    clearTimeout(this.timer)
    this.parent?.removeEventListener('abort', this)
  }
}

function fireDeadline (deadline: Deadline): void {
  deadline.fire()
}

function deadline (ms: number, parent?: AbortSignal): Deadline {
  return new Deadline(ms, parent)
}

/** Marks a failure raised by the layer's own timers, not by the app. */
class DeadlineSignalled extends Error {}

function deadlineSignalled (): Error {
  return new DeadlineSignalled()
}

class DefaultUpgradeLayer implements UpgradeLayer {
  readonly protocol: string
  readonly events = new TypedEventEmitter<UpgradeLayerEvents>()
  private readonly components: UpgradeLayerComponents
  private readonly invoke: Invoke
  private readonly maxRequestBytes: number
  private readonly maxReplyBytes: number
  private readonly maxConcurrentCalls: number
  private readonly maxCallMs: number
  private readonly replyMarginMs: number
  private readonly defaultDeadlineMs: number
  private readonly sessions: RequestSessions
  private current: DispatchState
  private changed: Deferred = deferred()
  private readonly waitingFor = new Map<number, number>()
  private active = 0
  private running = 0
  private idleWaiters: Deferred | undefined
  private shutdown = new AbortController()
  private started = false
  private readonly logged = new Set<string>()

  constructor (components: UpgradeLayerComponents, init: UpgradeLayerInit) {
    this.components = components
    this.protocol = rpcProtocol(validateSystemName(init.system))
    if (typeof init.invoke !== 'function') {
      throw new InvalidOptionError('invoke: must be a function')
    }
    this.invoke = init.invoke
    this.maxRequestBytes = positive(init.maxRequestBytes, DEFAULT_MAX_BYTES, 'maxRequestBytes')
    this.maxReplyBytes = positive(init.maxReplyBytes, DEFAULT_MAX_BYTES, 'maxReplyBytes')
    this.maxConcurrentCalls = positive(init.maxConcurrentCalls, 256, 'maxConcurrentCalls')
    this.maxCallMs = positive(init.maxCallMs, 10_000, 'maxCallMs')
    this.replyMarginMs = positive(init.replyMarginMs, 100, 'replyMarginMs', true)
    this.defaultDeadlineMs = positive(init.defaultDeadlineMs, 10_000, 'defaultDeadlineMs')
    this.sessions = createRequestSessions(components, {
      protocol: this.protocol,
      handler: async (bytes, { peer }) => this.encodeAnswer(await this.answer(bytes, peer)),
      onRejected: (peer, error) => { this.rejected(peer, error) },
      maxRequestBytes: this.maxRequestBytes,
      maxResponseBytes: this.maxReplyBytes,
      maxPendingPerSession: positive(init.maxCallsPerPeer, 32, 'maxCallsPerPeer'),
      runOnLimitedConnection: init.runOnLimitedConnection ?? true
    })
    if (init.state == null) {
      throw new InvalidOptionError('state: required')
    }
    this.current = normaliseState({
      version: init.state.version,
      class: init.state.class,
      minimumVersion: init.state.minimumVersion ?? 0,
      past: init.state.past ?? [],
      future: init.state.future ?? [],
      quiescing: init.state.quiescing ?? false
    })
  }

  get state (): Readonly<LayerState> {
    const { version, class: klass, minimumVersion, past, future, quiescing } = this.current
    return { version, class: klass, minimumVersion, past, future, quiescing }
  }

  get executing (): number {
    return this.running
  }

  readonly [Symbol.toStringTag] = '@molt/upgrade-layer'

  async start (): Promise<void> {
    if (this.started) {
      return
    }
    this.shutdown = new AbortController()
    await this.sessions.start()
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) {
      return
    }
    this.started = false
    this.shutdown.abort(new UnavailableError('the upgrade layer stopped'))
    await this.sessions.stop()
  }

  update (patch: Partial<LayerState>): void {
    this.current = normaliseState({ ...this.state, ...patch })
    log('state %o', this.state)
    const changed = this.changed
    this.changed = deferred()
    changed.resolve()
  }

  async idle (options: AbortOptions = {}): Promise<void> {
    while (this.running > 0) {
      this.idleWaiters ??= deferred()
      const waiter = this.idleWaiters.promise
      await (options.signal == null ? waiter : raceSignal(waiter, options.signal, { translateError: abortReason }))
    }
  }

  // --- callee ---------------------------------------------------------------------------------

  /** Logs (once per peer, reason and message) and reports a request refused as malformed. */
  private rejected (peer: PeerId, error: Error): void {
    const key = `${peer.toString()}\u0000${error.name}\u0000${error.message}`
    if (!this.logged.has(key)) {
      if (this.logged.size >= 1024) {
        this.logged.clear()
      }
      this.logged.add(key)
      log('rejected request from %p: %s %s', peer, error.name, error.message)
    }
    this.events.safeDispatchEvent('request:rejected', { detail: { peer, reason: error.name, error } })
  }

  private errorReply (error: Error): RpcReply {
    const remoteName = error instanceof RemoteError ? error.remoteName : undefined
    return {
      version: this.current.version,
      class: this.current.class,
      error: remoteName != null ? { name: error.name, message: error.message, remoteName } : { name: error.name, message: error.message }
    }
  }

  private encodeAnswer (reply: RpcReply): Uint8Array {
    let bytes: Uint8Array
    try {
      bytes = encodeReply(reply)
    } catch (err) {
      return encodeReply(this.errorReply(new RemoteError(`the reply is not a dag-cbor value (${(err as Error).message})`)))
    }
    if (bytes.byteLength > this.maxReplyBytes) {
      return encodeReply(this.errorReply(new MessageTooLargeError(`the reply of ${bytes.byteLength} bytes exceeds ${this.maxReplyBytes} bytes`)))
    }
    return bytes
  }

  private async answer (bytes: Uint8Array, peer: PeerId): Promise<RpcReply> {
    let request: RpcRequest
    try {
      request = decodeRequest(bytes, this.maxRequestBytes)
    } catch (err) {
      this.rejected(peer, err as Error)
      return this.errorReply(err as Error)
    }
    this.seen(peer, request.version, request.class, 'request')
    if (this.active >= this.maxConcurrentCalls) {
      return this.errorReply(new UnavailableError(`busy: ${this.active} calls in progress`))
    }
    this.active++
    try {
      const ok = await this.execute(request, peer)
      return { version: this.current.version, class: this.current.class, ok }
    } catch (err) {
      return this.errorReply(err instanceof Error ? err : appFailure(err))
    } finally {
      this.active--
    }
  }

  private async execute (request: RpcRequest, peer: PeerId): Promise<unknown> {
    const budget = Math.min(request.deadlineMs ?? this.maxCallMs, this.maxCallMs)
    const margin = Math.min(this.replyMarginMs, Math.floor(budget / 2))
    let routed: Route = route(this.current, request.version)
    if ('error' in routed) {
      throw routed.error
    }
    const limit = deadline(budget - margin, this.shutdown.signal)
    try {
      return await this.run(request, peer, routed, limit.signal, budget - margin)
    } finally {
      limit.dispose()
    }
  }

  private async run (request: RpcRequest, peer: PeerId, routed: Route, signal: AbortSignal, budgetMs: number): Promise<unknown> {
    if ('wait' in routed) {
      routed = await this.waitForVersion(request, peer, signal)
    }
    if (!('target' in routed)) {
      throw 'error' in routed ? routed.error : new VersionUnknownError(`version ${request.version} is not installed`)
    }
    const target = routed.target
    this.running++
    try {
      const call: InvokeRequest = { target, method: request.method, args: request.args, peer, caller: { version: request.version, class: request.class }, signal }
      if (request.object != null) {
        call.object = request.object
      }
      let result: unknown
      try {
        result = this.invoke(call)
        if (isPromiseLike(result)) {
          result = await raceSignal(Promise.resolve(result), signal, { translateError: deadlineSignalled })
        }
      } catch (err) {
        if (err instanceof DeadlineSignalled) {
          throw this.shutdown.signal.aborted
            ? new UnavailableError('the upgrade layer stopped')
            : new CallTimeoutError(`${request.method} at version ${target.version} did not finish within ${budgetMs} ms`)
        }
        throw appFailure(err)
      }
      return result
    } finally {
      this.running--
      if (this.running === 0 && this.idleWaiters != null) {
        const waiters = this.idleWaiters
        this.idleWaiters = undefined
        waiters.resolve()
      }
    }
  }

  /** Waits for the owner to install what a call at a newer version needs, within its deadline. */
  private async waitForVersion (request: RpcRequest, peer: PeerId, signal: AbortSignal): Promise<Route> {
    const version = request.version
    const waiting = this.waitingFor.get(version) ?? 0
    this.waitingFor.set(version, waiting + 1)
    try {
      if (waiting === 0) {
        log('call from %p names version %d above %d: waiting for its future-SO', peer, version, this.current.version)
        this.events.safeDispatchEvent('version:unknown', { detail: { peer, version, class: request.class } })
      }
      while (true) {
        const next = this.changed.promise
        const routed = route(this.current, version)
        if (!('wait' in routed)) {
          return routed
        }
        await raceSignal(next, signal, { translateError: deadlineSignalled })
      }
    } catch (err) {
      if (!(err instanceof DeadlineSignalled)) {
        throw err
      }
      if (this.shutdown.signal.aborted) {
        throw new UnavailableError('the upgrade layer stopped')
      }
      throw new VersionUnknownError(`version ${version} is not installed at version ${this.current.version} (waited until the call's deadline)`)
    } finally {
      const left = (this.waitingFor.get(version) ?? 1) - 1
      if (left === 0) {
        this.waitingFor.delete(version)
      } else {
        this.waitingFor.set(version, left)
      }
    }
  }

  private seen (peer: PeerId, version: number, klass: string, source: VersionSeen['source']): void {
    if (this.events.listenerCount('version:seen') > 0) {
      this.events.safeDispatchEvent('version:seen', { detail: { peer, version, class: klass, source } })
    }
  }

  // --- caller ---------------------------------------------------------------------------------

  async call (peers: PeerId | readonly PeerId[], method: string, args: readonly unknown[] = [], options: CallOptions = {}): Promise<unknown> {
    const list: readonly PeerId[] = Array.isArray(peers) ? peers : [peers as PeerId]
    if (list.length === 0) {
      throw new InvalidOptionError('peers: at least one peer is needed')
    }
    if (typeof method !== 'string' || method.length === 0 || method.length > MAX_NAME_LENGTH) {
      throw new InvalidOptionError(`method: must be a string of 1-${MAX_NAME_LENGTH} characters`)
    }
    if (!Array.isArray(args)) {
      throw new InvalidOptionError('args: must be an array')
    }
    const deadlineMs = positive(options.deadlineMs, this.defaultDeadlineMs, 'deadlineMs')
    const attemptTimeoutMs = positive(options.attemptTimeoutMs, Infinity, 'attemptTimeoutMs')
    const until = performance.now() + deadlineMs
    const request: RpcRequest = {
      version: options.version ?? this.current.version,
      class: options.class ?? this.current.class,
      method,
      args: args as unknown[]
    }
    if (options.object != null) {
      request.object = options.object
    }
    let lastError: Error | undefined
    for (const peer of list) {
      if (options.signal?.aborted === true) {
        throw abortReason(options.signal)
      }
      const remaining = Math.floor(until - performance.now())
      if (remaining <= 0) {
        throw new CallTimeoutError(`${method}: the deadline of ${deadlineMs} ms passed`, { cause: lastError })
      }
      try {
        return await this.attempt(peer, request, Math.min(remaining, attemptTimeoutMs), options.signal)
      } catch (err) {
        lastError = err as Error
        if (!isRetryable(err)) {
          throw err
        }
        log('%s at %p failed, %s - %s', method, peer, lastError.name, lastError.message)
      }
    }
    throw lastError as Error
  }

  /** One request and its reply on the peer's session, failures mapped to the layer's typed errors. */
  private async exchange (peer: PeerId, bytes: Uint8Array, request: RpcRequest, ms: number, limit: Deadline, callerSignal: AbortSignal | undefined): Promise<Uint8Array> {
    try {
      return await this.sessions.request(peer, bytes, { signal: limit.signal })
    } catch (err) {
      if (callerSignal?.aborted === true) {
        throw abortReason(callerSignal)
      }
      if (limit.timedOut) {
        throw new CallTimeoutError(`${request.method} at ${peer.toString()}: no reply within ${ms} ms`)
      }
      if (err instanceof MessageTooLargeError || err instanceof UnavailableError) {
        throw err
      }
      throw new UnavailableError(`${request.method} at ${peer.toString()}: ${(err as Error).message}`, { cause: err })
    }
  }

  /** A call to this node itself, answered by the same path as a remote one. */
  private async callSelf (bytes: Uint8Array, request: RpcRequest, ms: number, limit: Deadline, callerSignal: AbortSignal | undefined): Promise<Uint8Array> {
    const signal = limit.signal
    if (!this.started) {
      throw new UnavailableError(`${request.method} at this node: the upgrade layer is not started`)
    }
    const self = this.components.libp2p.peerId
    try {
      return this.encodeAnswer(await raceSignal(this.answer(bytes, self), signal, { translateError: deadlineSignalled }))
    } catch (err) {
      if (callerSignal?.aborted === true) {
        throw abortReason(callerSignal)
      }
      if (limit.timedOut) {
        throw new CallTimeoutError(`${request.method} at this node: no reply within ${ms} ms`)
      }
      throw err
    }
  }

  private async attempt (peer: PeerId, request: RpcRequest, ms: number, callerSignal: AbortSignal | undefined): Promise<unknown> {
    const bytes = encodeRequest({ ...request, deadlineMs: Math.max(1, Math.floor(ms)) })
    if (bytes.byteLength > this.maxRequestBytes) {
      throw new MessageTooLargeError(`${request.method}: the request of ${bytes.byteLength} bytes exceeds ${this.maxRequestBytes} bytes`)
    }
    const limit = deadline(ms, callerSignal)
    let replyBytes: Uint8Array
    try {
      replyBytes = peer.equals(this.components.libp2p.peerId)
        // a call to this node: the same encoding, labels and dispatch, without a stream
        ? await this.callSelf(bytes, request, ms, limit, callerSignal)
        : await this.exchange(peer, bytes, request, ms, limit, callerSignal)
    } finally {
      limit.dispose()
    }
    let reply: RpcReply
    try {
      reply = decodeReply(replyBytes, this.maxReplyBytes)
    } catch (err) {
      throw new UnavailableError(`${request.method} at ${peer.toString()}: malformed reply (${(err as Error).message})`, { cause: err })
    }
    this.seen(peer, reply.version, reply.class, 'reply')
    if ('error' in reply) {
      throw errorFromWire(reply.error.name, reply.error.message, reply.error.remoteName)
    }
    return reply.ok
  }
}

/** Maps what the app (or an SO) threw to the typed failure the caller sees. */
function appFailure (err: unknown): Error {
  if (err instanceof Error || (err != null && typeof err === 'object' && 'name' in err && 'message' in err)) {
    const name = String((err as Error).name)
    const message = String((err as Error).message)
    if (name === 'SimulationRefusedError') {
      return new SimulationRefusedError(message)
    }
    if (name === 'UpgradingError') {
      return new UpgradingError(message)
    }
    return new RemoteError(message, { remoteName: name })
  }
  let text = 'the app threw a non-error value'
  try {
    text = String(err)
  } catch {}
  return new RemoteError(text)
}

/**
 * Creates the upgrade layer of a node. Call `start()` to register the RPC protocol.
 */
export function createUpgradeLayer (components: UpgradeLayerComponents, init: UpgradeLayerInit): UpgradeLayer {
  return new DefaultUpgradeLayer(components, init)
}
