/**
 * Request sessions: a request/response protocol that carries many requests on one long-lived
 * stream per peer, each tagged with an id, instead of opening a stream per request.
 *
 * Why: on libp2p 3 a new stream costs far more than the request it carries. Opening one runs
 * yamux's open and close frames, multistream-select, an abort-signal timer and a peer-store merge
 * on both ends (libp2p records the protocol on every stream, decoding and re-sorting the peer's
 * whole record). Measured on loopback TCP, both ends in one process (`npm run bench -- rpc`): a
 * null request on a new stream costs about 520 µs of CPU, the same request on an open stream
 * about 80 µs. A Chord node makes tens of calls a second, so that difference was most of a
 * testnet node's CPU.
 *
 * Each direction of each peer pair has its own session: the opener sends requests, the other end
 * answers them, in any order. A frame is
 *
 * ```
 * uvarint id ‖ kind (1 byte) ‖ uvarint length ‖ body
 * ```
 *
 * where kind is request, reply, or one of three failures the answering side sends instead of a
 * reply (busy, too large, failed; the body is a short UTF-8 reason). Ids are the opener's; a
 * reply to an id nobody waits for any more (its caller gave up) is dropped. An oversized frame is
 * refused by id and its body skipped as it arrives, so one bad request does not end the session.
 *
 * @packageDocumentation
 */
import { logger } from '@libp2p/logger'
import { raceSignal } from 'race-signal'
import { Uint8ArrayList } from 'uint8arraylist'
import { InvalidOptionError, MessageTooLargeError, UnavailableError } from './errors.ts'
import type { AbortOptions, Connection, Libp2p, PeerId, Startable, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'

const log = logger('molt:overlay:session')

/** Frame kinds. */
const REQUEST = 0
const REPLY = 1
/** the answering side has too many of this session's requests in hand */
const BUSY = 2
/** the request, or the reply the handler produced, exceeds the limit */
const TOO_LARGE = 3
/** the handler threw */
const FAILED = 4

/** Varints in a header carry at most 35 bits: ids wrap below 2^31 and bodies are far smaller. */
const MAX_VARINT_BYTES = 5
const MAX_HEADER_BYTES = MAX_VARINT_BYTES * 2 + 1
const MAX_ID = 0x7fff_ffff
/** failure reasons are diagnostics, not payloads */
const MAX_REASON_BYTES = 256

/**
 * A peer broke the session framing (an unknown frame kind, a request sent to the opener, a
 * malformed header). The session is reset.
 */
export class SessionProtocolError extends Error {
  static override readonly name = 'SessionProtocolError'
  override readonly name = 'SessionProtocolError'
}

/** One decoded frame; `tooLarge` frames carry no body (it is skipped). */
interface Frame {
  id: number
  kind: number
  body: Uint8Array
  tooLarge?: number
}

/** Reads a varint at `offset`: [value, next offset], or undefined when the bytes end first. */
function readVarint (bytes: Uint8Array, offset: number): [number, number] | undefined {
  let value = 0
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (offset + i >= bytes.byteLength) {
      return undefined
    }
    const b = bytes[offset + i] as number
    value += (b & 0x7f) * 2 ** (7 * i)
    if ((b & 0x80) === 0) {
      return [value, offset + i + 1]
    }
  }
  throw new SessionProtocolError(`a varint longer than ${MAX_VARINT_BYTES} bytes`)
}

function writeVarint (value: number, into: Uint8Array, offset: number): number {
  let v = value
  while (v >= 0x80) {
    into[offset++] = (v % 0x80) | 0x80
    v = Math.floor(v / 0x80)
  }
  into[offset++] = v
  return offset
}

/** Encodes one frame as a header and the body, without copying the body. */
function encodeFrame (id: number, kind: number, body: Uint8Array): Uint8ArrayList {
  const header = new Uint8Array(MAX_HEADER_BYTES)
  let end = writeVarint(id, header, 0)
  header[end++] = kind
  end = writeVarint(body.byteLength, header, end)
  return new Uint8ArrayList(header.subarray(0, end), body)
}

function reasonBytes (reason: string): Uint8Array {
  const bytes = new TextEncoder().encode(reason)
  return bytes.subarray(0, MAX_REASON_BYTES)
}

/**
 * Splits a session's bytes into frames. Bodies above `maxBody` are not buffered: the frame is
 * yielded once with `tooLarge` set, and its bytes are dropped as they arrive.
 */
class FrameDecoder {
  private readonly buffer = new Uint8ArrayList()
  private skipping = 0

  private readonly maxBody: number

  constructor (maxBody: number) {
    this.maxBody = maxBody
  }

  * push (data: Uint8Array | Uint8ArrayList): Generator<Frame> {
    this.buffer.append(data)
    while (true) {
      if (this.skipping > 0) {
        const drop = Math.min(this.skipping, this.buffer.byteLength)
        this.buffer.consume(drop)
        this.skipping -= drop
        if (this.skipping > 0) {
          return
        }
      }
      if (this.buffer.byteLength === 0) {
        return
      }
      const head = this.buffer.subarray(0, Math.min(this.buffer.byteLength, MAX_HEADER_BYTES))
      const id = readVarint(head, 0)
      if (id == null || id[1] >= head.byteLength) {
        return
      }
      const kind = head[id[1]] as number
      const length = readVarint(head, id[1] + 1)
      if (length == null) {
        return
      }
      const headerBytes = length[1]
      if (length[0] > this.maxBody) {
        this.buffer.consume(headerBytes)
        this.skipping = length[0]
        yield { id: id[0], kind, body: new Uint8Array(0), tooLarge: length[0] }
        continue
      }
      if (this.buffer.byteLength < headerBytes + length[0]) {
        return
      }
      const body = this.buffer.subarray(headerBytes, headerBytes + length[0])
      this.buffer.consume(headerBytes + length[0])
      yield { id: id[0], kind, body }
    }
  }
}

/**
 * What a session handler learns of a request besides its bytes.
 */
export interface SessionRequestContext {
  /** the peer that sent the request */
  peer: PeerId
  /** the connection it arrived on */
  connection: Connection
  /**
   * Aborts when the session ends or the node stops. It carries no per-request deadline: a
   * handler bounds its own work (a handler that never settles holds one of the session's
   * `maxPendingPerSession` slots until the session ends).
   */
  signal: AbortSignal
}

/**
 * Answers one request. The returned bytes are the reply; a throw is sent as a failure, which the
 * caller sees as `UnavailableError`.
 */
export type SessionHandler = (request: Uint8Array, context: SessionRequestContext) => Uint8Array | Promise<Uint8Array>

/**
 * The parts of a libp2p node request sessions use.
 */
export interface RequestSessionsComponents {
  libp2p: Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol'>
}

/**
 * Options of {@link createRequestSessions}.
 */
export interface RequestSessionsInit {
  /** the protocol id */
  protocol: string

  /**
   * Answers requests from peers. Without one the node only sends requests, and registers no
   * handler.
   */
  handler?: SessionHandler

  /**
   * Called for each request refused before it reached the handler: too large (a
   * `MessageTooLargeError`), or a session reset for breaking the framing (a
   * `SessionProtocolError`). For logging and counting; the peer has already been answered.
   */
  onRejected?: (peer: PeerId, error: Error) => void

  /**
   * Largest request accepted or sent, in bytes.
   *
   * @default 65536
   */
  maxRequestBytes?: number

  /**
   * Largest reply accepted or sent, in bytes.
   *
   * @default 65536
   */
  maxResponseBytes?: number

  /**
   * Requests of one session being answered at once; more are answered busy without reaching the
   * handler, and their callers see `UnavailableError`.
   *
   * @default 32
   */
  maxPendingPerSession?: number

  /**
   * Sessions a peer may open to this node per connection (libp2p's inbound stream limit for the
   * protocol). A peer keeps one; a few more cover a session that is being replaced.
   *
   * @default 4
   */
  maxInboundSessions?: number

  /**
   * An outbound session with no request in flight for this long is closed, in milliseconds.
   *
   * @default 60000
   */
  idleTimeoutMs?: number

  /**
   * Deadline for opening a session (dialling the peer if need be), in milliseconds; each request
   * is also bounded by its own signal.
   *
   * @default 10000
   */
  openTimeoutMs?: number

  /**
   * Whether sessions run on limited (relayed) connections.
   *
   * @default true
   */
  runOnLimitedConnection?: boolean
}

/**
 * A request/response protocol over one long-lived stream per peer.
 */
export interface RequestSessions extends Startable {
  /** the protocol id */
  readonly protocol: string

  /** sessions this node opened that are open now */
  readonly outbound: number

  /**
   * Sends one request to `peer` on its session (opened first if there is none) and returns the
   * reply. Fails `MessageTooLargeError` for a request or reply over the limits, `UnavailableError`
   * when the peer cannot be reached, refuses the protocol, is busy, fails to answer or the
   * session ends first, and with the signal's reason when it aborts.
   */
  request(peer: PeerId, request: Uint8Array, options?: AbortOptions): Promise<Uint8Array>
}

interface Waiting {
  resolve: (reply: Uint8Array) => void
  reject: (err: Error) => void
}

function positive (value: number | undefined, fallback: number, what: string): number {
  if (value == null) {
    return fallback
  }
  if (typeof value !== 'number' || Number.isNaN(value) || value <= 0) {
    throw new InvalidOptionError(`${what}: must be a positive number (got ${String(value)})`)
  }
  return value
}

/** One stream and what is in flight on it. */
class Session {
  /** outbound: requests sent and not yet answered, by id */
  readonly waiting = new Map<number, Waiting>()
  /** inbound: requests being answered */
  answering = 0
  lastUsed = Date.now()
  ended = false
  private nextId = 0
  private readonly controller = new AbortController()

  readonly stream: Stream
  readonly peer: PeerId
  readonly decoder: FrameDecoder

  constructor (stream: Stream, peer: PeerId, decoder: FrameDecoder) {
    this.stream = stream
    this.peer = peer
    this.decoder = decoder
  }

  get signal (): AbortSignal {
    return this.controller.signal
  }

  id (): number {
    this.nextId = this.nextId >= MAX_ID ? 1 : this.nextId + 1
    return this.nextId
  }

  /** Sends a frame; false when the stream no longer takes writes. */
  send (id: number, kind: number, body: Uint8Array): boolean {
    if (this.ended || this.stream.writeStatus !== 'writable') {
      return false
    }
    try {
      // backpressure is bounded by the callers: at most the requests in flight, each under the
      // size limit, wait in the stream's write buffer
      this.stream.send(encodeFrame(id, kind, body))
      return true
    } catch {
      return false
    }
  }

  /** Ends the session: rejects what waits on it and aborts what is being answered. */
  end (reason: string, cause?: Error): void {
    if (this.ended) {
      return
    }
    this.ended = true
    this.controller.abort(new UnavailableError(reason, { cause }))
    for (const w of this.waiting.values()) {
      w.reject(new UnavailableError(`${this.peer.toString()}: ${reason}`, { cause }))
    }
    this.waiting.clear()
  }
}

class DefaultRequestSessions implements RequestSessions {
  readonly protocol: string
  private readonly components: RequestSessionsComponents
  private readonly handler: SessionHandler | undefined
  private readonly onRejected: ((peer: PeerId, error: Error) => void) | undefined
  private readonly maxRequestBytes: number
  private readonly maxResponseBytes: number
  private readonly maxPendingPerSession: number
  private readonly maxInboundSessions: number
  private readonly idleTimeoutMs: number
  private readonly openTimeoutMs: number
  private readonly runOnLimitedConnection: boolean
  /** outbound sessions by peer */
  private readonly sessions = new Map<string, Session>()
  /** outbound sessions being opened, by peer */
  private readonly opening = new Map<string, Promise<Session>>()
  private readonly inbound = new Set<Session>()
  private sweeper: ReturnType<typeof setInterval> | undefined
  private shutdown = new AbortController()
  private started = false

  constructor (components: RequestSessionsComponents, init: RequestSessionsInit) {
    if (typeof init.protocol !== 'string' || init.protocol.length === 0) {
      throw new InvalidOptionError('protocol: required')
    }
    if (init.handler != null && typeof init.handler !== 'function') {
      throw new InvalidOptionError('handler: must be a function')
    }
    this.components = components
    this.protocol = init.protocol
    this.handler = init.handler
    this.onRejected = init.onRejected
    this.maxRequestBytes = positive(init.maxRequestBytes, 65_536, 'maxRequestBytes')
    this.maxResponseBytes = positive(init.maxResponseBytes, 65_536, 'maxResponseBytes')
    this.maxPendingPerSession = positive(init.maxPendingPerSession, 32, 'maxPendingPerSession')
    this.maxInboundSessions = positive(init.maxInboundSessions, 4, 'maxInboundSessions')
    this.idleTimeoutMs = positive(init.idleTimeoutMs, 60_000, 'idleTimeoutMs')
    this.openTimeoutMs = positive(init.openTimeoutMs, 10_000, 'openTimeoutMs')
    this.runOnLimitedConnection = init.runOnLimitedConnection ?? true
  }

  readonly [Symbol.toStringTag] = '@molt/request-sessions'

  get outbound (): number {
    return this.sessions.size
  }

  async start (): Promise<void> {
    if (this.started) {
      return
    }
    this.shutdown = new AbortController()
    if (this.handler != null) {
      await this.components.libp2p.handle(this.protocol, (stream, connection) => {
        this.accept(stream, connection)
      }, {
        maxInboundStreams: this.maxInboundSessions,
        maxOutboundStreams: this.maxInboundSessions,
        runOnLimitedConnection: this.runOnLimitedConnection
      })
    }
    // one timer for every session: a timer per request or per session would cost more than the
    // sessions save
    this.sweeper = setInterval(() => { this.closeIdle() }, Math.max(1, Math.floor(this.idleTimeoutMs / 2)))
    this.sweeper.unref?.()
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) {
      return
    }
    this.started = false
    clearInterval(this.sweeper)
    this.sweeper = undefined
    this.shutdown.abort(new UnavailableError('the node stopped'))
    if (this.handler != null) {
      await this.components.libp2p.unhandle(this.protocol)
    }
    for (const session of [...this.sessions.values(), ...this.inbound]) {
      session.end('the node stopped')
      session.stream.abort(new UnavailableError('the node stopped'))
    }
    this.sessions.clear()
    this.inbound.clear()
  }

  // --- the opener's side ----------------------------------------------------------------------

  async request (peer: PeerId, request: Uint8Array, options: AbortOptions = {}): Promise<Uint8Array> {
    const signal = options.signal
    signal?.throwIfAborted()
    if (!this.started) {
      throw new UnavailableError(`${this.protocol}: not started`)
    }
    if (request.byteLength > this.maxRequestBytes) {
      throw new MessageTooLargeError(`${this.protocol}: the request of ${request.byteLength} bytes exceeds ${this.maxRequestBytes} bytes`)
    }
    const session = await this.session(peer, signal)
    const id = session.id()
    const reply = new Promise<Uint8Array>((resolve, reject) => {
      session.waiting.set(id, { resolve, reject })
    })
    session.lastUsed = Date.now()
    if (!session.send(id, REQUEST, request)) {
      session.waiting.delete(id)
      this.drop(session, 'the session closed')
      throw new UnavailableError(`${this.protocol}: the session to ${peer.toString()} closed`)
    }
    try {
      return await raceSignal(reply, signal)
    } catch (err) {
      // given up: a reply that comes later is dropped
      session.waiting.delete(id)
      throw err
    }
  }

  /** The open session to `peer`, opening one (once, however many callers wait) if needed. */
  private async session (peer: PeerId, signal: AbortSignal | undefined): Promise<Session> {
    const key = peer.toString()
    const open = this.sessions.get(key)
    if (open != null && !open.ended) {
      return open
    }
    let opening = this.opening.get(key)
    if (opening == null) {
      opening = this.open(peer).finally(() => { this.opening.delete(key) })
      this.opening.set(key, opening)
    }
    // the open is shared: one caller's abort ends its own wait, not the open
    return await raceSignal(opening, signal)
  }

  private async open (peer: PeerId): Promise<Session> {
    let stream: Stream
    try {
      stream = await this.components.libp2p.dialProtocol(peer, this.protocol, {
        signal: AbortSignal.any([AbortSignal.timeout(this.openTimeoutMs), this.shutdown.signal]),
        runOnLimitedConnection: this.runOnLimitedConnection,
        // the protocol goes with the first request (optimistic multistream-select); a peer
        // without it fails the session, and its requests with UnavailableError
        negotiateFully: false
      })
    } catch (err) {
      throw new UnavailableError(`${this.protocol}: could not open a session to ${peer.toString()} (${(err as Error).message})`, { cause: err })
    }
    const session = new Session(stream, peer, new FrameDecoder(this.maxResponseBytes))
    if (!this.started) {
      stream.abort(new UnavailableError('the node stopped'))
      throw new UnavailableError(`${this.protocol}: the node stopped`)
    }
    stream.addEventListener('message', (evt: StreamMessageEvent) => { this.onReplies(session, evt.data) })
    stream.addEventListener('remoteCloseWrite', () => {
      // no more replies can come
      this.drop(session, 'the peer closed the session')
    })
    stream.addEventListener('close', (evt: StreamCloseEvent) => {
      this.forget(session)
      session.end(evt.error != null ? `the session ended (${evt.error.message})` : 'the session ended', evt.error)
    })
    this.sessions.set(peer.toString(), session)
    log.trace('opened a %s session to %p', this.protocol, peer)
    return session
  }

  private onReplies (session: Session, data: Uint8Array | Uint8ArrayList): void {
    try {
      for (const frame of session.decoder.push(data)) {
        const waiting = session.waiting.get(frame.id)
        if (frame.kind === REQUEST) {
          throw new SessionProtocolError('a request on a session this node opened')
        }
        if (waiting == null) {
          // its caller gave up (deadline or abort): the answer is no longer wanted
          continue
        }
        session.waiting.delete(frame.id)
        const reason = (): string => new TextDecoder().decode(frame.body)
        if (frame.tooLarge != null) {
          waiting.reject(new MessageTooLargeError(`${this.protocol}: the reply of ${frame.tooLarge} bytes from ${session.peer.toString()} exceeds ${this.maxResponseBytes} bytes`))
        } else if (frame.kind === REPLY) {
          waiting.resolve(frame.body)
        } else if (frame.kind === TOO_LARGE) {
          waiting.reject(new MessageTooLargeError(`${this.protocol} at ${session.peer.toString()}: ${reason()}`))
        } else if (frame.kind === BUSY || frame.kind === FAILED) {
          waiting.reject(new UnavailableError(`${this.protocol} at ${session.peer.toString()}: ${reason()}`))
        } else {
          throw new SessionProtocolError(`unknown frame kind ${frame.kind}`)
        }
      }
    } catch (err) {
      this.violation(session, err as Error)
    }
  }

  /** Closes sessions this node opened that carried no request for `idleTimeoutMs`. */
  private closeIdle (): void {
    const before = Date.now() - this.idleTimeoutMs
    for (const session of this.sessions.values()) {
      if (session.waiting.size === 0 && session.lastUsed < before) {
        this.drop(session, 'idle')
      }
    }
  }

  /** Stops using an outbound session and closes it gracefully. */
  private drop (session: Session, reason: string): void {
    this.forget(session)
    session.end(reason)
    session.stream.close({ signal: AbortSignal.timeout(this.openTimeoutMs) }).catch((err: Error) => {
      session.stream.abort(err)
    })
  }

  private forget (session: Session): void {
    const key = session.peer.toString()
    if (this.sessions.get(key) === session) {
      this.sessions.delete(key)
    }
  }

  // --- the answering side ---------------------------------------------------------------------

  private accept (stream: Stream, connection: Connection): void {
    const session = new Session(stream, connection.remotePeer, new FrameDecoder(this.maxRequestBytes))
    this.inbound.add(session)
    stream.addEventListener('message', (evt: StreamMessageEvent) => { this.onRequests(session, connection, evt.data) })
    stream.addEventListener('remoteCloseWrite', () => {
      // the opener sends no more: answer what is in hand, then close
      this.closeWhenAnswered(session)
    })
    stream.addEventListener('close', () => {
      this.inbound.delete(session)
      session.end('the session ended')
    })
  }

  private onRequests (session: Session, connection: Connection, data: Uint8Array | Uint8ArrayList): void {
    try {
      for (const frame of session.decoder.push(data)) {
        if (frame.kind !== REQUEST) {
          throw new SessionProtocolError(`a frame of kind ${frame.kind} on a session the peer opened`)
        }
        if (frame.tooLarge != null) {
          const err = new MessageTooLargeError(`the request of ${frame.tooLarge} bytes exceeds ${this.maxRequestBytes} bytes`)
          this.onRejected?.(session.peer, err)
          session.send(frame.id, TOO_LARGE, reasonBytes(err.message))
          continue
        }
        if (session.answering >= this.maxPendingPerSession) {
          session.send(frame.id, BUSY, reasonBytes(`busy: ${session.answering} requests in hand`))
          continue
        }
        this.answer(session, connection, frame.id, frame.body)
      }
    } catch (err) {
      this.violation(session, err as Error)
    }
  }

  private answer (session: Session, connection: Connection, id: number, request: Uint8Array): void {
    const handler = this.handler as SessionHandler
    session.answering++
    const context: SessionRequestContext = { peer: session.peer, connection, signal: session.signal }
    let pending: Promise<Uint8Array>
    try {
      pending = Promise.resolve(handler(request, context))
    } catch (err) {
      pending = Promise.reject(err)
    }
    pending.then(reply => {
      if (reply.byteLength > this.maxResponseBytes) {
        session.send(id, TOO_LARGE, reasonBytes(`the reply of ${reply.byteLength} bytes exceeds ${this.maxResponseBytes} bytes`))
      } else {
        session.send(id, REPLY, reply)
      }
    }, (err: Error) => {
      log('%s from %p: the handler failed - %e', this.protocol, session.peer, err)
      session.send(id, FAILED, reasonBytes(`the handler failed: ${err?.message ?? String(err)}`))
    }).finally(() => {
      session.answering--
      if (session.stream.remoteWriteStatus !== 'writable') {
        this.closeWhenAnswered(session)
      }
    })
  }

  private closeWhenAnswered (session: Session): void {
    if (session.answering > 0 || session.ended) {
      return
    }
    this.inbound.delete(session)
    session.end('the peer closed the session')
    session.stream.close({ signal: AbortSignal.timeout(this.openTimeoutMs) }).catch((err: Error) => {
      session.stream.abort(err)
    })
  }

  private violation (session: Session, err: Error): void {
    log('%s with %p: %s - resetting the session', this.protocol, session.peer, err.message)
    if (err instanceof SessionProtocolError) {
      this.onRejected?.(session.peer, err)
    }
    this.forget(session)
    this.inbound.delete(session)
    session.end(err.message)
    session.stream.abort(err)
  }
}

/**
 * Creates request sessions for one protocol. Call `start()` to register the handler (if any)
 * before sending or answering.
 */
export function createRequestSessions (components: RequestSessionsComponents, init: RequestSessionsInit): RequestSessions {
  return new DefaultRequestSessions(components, init)
}
