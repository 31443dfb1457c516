import { lpStream } from '@libp2p/utils'
import { logger } from '@libp2p/logger'
import { MessageTooLargeError, UnavailableError } from './errors.ts'
import type { Libp2p, PeerId, Stream, Connection, AbortOptions } from '@libp2p/interface'

const log = logger('molt:overlay:request')

/**
 * What a request handler learns of the request besides its bytes.
 */
export interface RequestContext {
  /** the peer that sent the request */
  peer: PeerId
  /** the connection it arrived on */
  connection: Connection
  /** aborts when the request's deadline passes or the node stops */
  signal: AbortSignal
}

/**
 * Answers one request. Returning bytes sends them as the reply; throwing resets the stream.
 */
export type RequestHandler = (request: Uint8Array, context: RequestContext) => Promise<Uint8Array>

/**
 * Limits of a request/response protocol.
 */
export interface RequestLimits {
  /**
   * Largest request accepted, in bytes.
   *
   * @default 65536
   */
  maxRequestBytes?: number

  /**
   * Largest reply accepted, in bytes.
   *
   * @default 65536
   */
  maxResponseBytes?: number

  /**
   * Deadline for a whole exchange.
   *
   * @default 10000
   */
  timeoutMs?: number

  /**
   * Concurrent inbound streams per connection.
   *
   * @default 32
   */
  maxInboundStreams?: number

  /**
   * Concurrent outbound streams per connection.
   *
   * @default 64
   */
  maxOutboundStreams?: number

  /**
   * Whether the protocol runs on limited (relayed) connections.
   *
   * @default true
   */
  runOnLimitedConnection?: boolean
}

const DEFAULT_MAX_BYTES = 65_536
const DEFAULT_TIMEOUT = 10_000

/**
 * Registers a handler for a one-request, one-reply protocol. Each stream carries one
 * length-prefixed request and one length-prefixed reply.
 */
export async function handleRequests (libp2p: Libp2p, protocol: string, handler: RequestHandler, limits: RequestLimits = {}): Promise<void> {
  const maxRequestBytes = limits.maxRequestBytes ?? DEFAULT_MAX_BYTES
  const timeoutMs = limits.timeoutMs ?? DEFAULT_TIMEOUT
  await libp2p.handle(protocol, async (stream: Stream, connection: Connection) => {
    const signal = AbortSignal.timeout(timeoutMs)
    try {
      const lp = lpStream(stream, { maxDataLength: maxRequestBytes })
      const request = await lp.read({ signal })
      const reply = await handler(request.subarray(), { peer: connection.remotePeer, connection, signal })
      await lp.write(reply, { signal })
      await stream.close({ signal })
    } catch (err) {
      log('%s from %p failed - %e', protocol, connection.remotePeer, err)
      stream.abort(err as Error)
    }
  }, {
    maxInboundStreams: limits.maxInboundStreams ?? 32,
    maxOutboundStreams: limits.maxOutboundStreams ?? 64,
    runOnLimitedConnection: limits.runOnLimitedConnection ?? true
  })
}

/**
 * Options for {@link sendRequest}.
 */
export interface SendRequestOptions extends AbortOptions {
  /**
   * Largest reply accepted, in bytes; a larger one fails `MessageTooLargeError`.
   *
   * @default 65536
   */
  maxResponseBytes?: number

  /**
   * Deadline when no signal is given.
   *
   * @default 10000
   */
  timeoutMs?: number

  /**
   * Whether the request may use a limited (relayed) connection.
   *
   * @default true
   */
  runOnLimitedConnection?: boolean
}

/**
 * Sends one request on a new stream and returns the reply. Failures to reach the peer or a
 * stream cut short surface as `UnavailableError`; an oversized reply as `MessageTooLargeError`.
 */
export async function sendRequest (libp2p: Libp2p, peer: PeerId, protocol: string, request: Uint8Array, options: SendRequestOptions = {}): Promise<Uint8Array> {
  const signal = options.signal ?? AbortSignal.timeout(options.timeoutMs ?? DEFAULT_TIMEOUT)
  const maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_BYTES
  let stream: Stream | undefined
  try {
    stream = await libp2p.dialProtocol(peer, protocol, {
      signal,
      runOnLimitedConnection: options.runOnLimitedConnection ?? true
    })
    const lp = lpStream(stream, { maxDataLength: maxResponseBytes })
    await lp.write(request, { signal })
    const reply = await lp.read({ signal })
    await stream.close({ signal })
    return reply.subarray()
  } catch (err) {
    stream?.abort(err as Error)
    const name = (err as Error).name
    if (name === 'InvalidDataLengthError') {
      throw new MessageTooLargeError(`${protocol}: reply from ${peer.toString()} exceeds ${maxResponseBytes} bytes`)
    }
    if (signal.aborted && options.signal?.aborted === true) {
      throw err
    }
    throw new UnavailableError(`${protocol}: ${peer.toString()} did not answer (${(err as Error).message})`, { cause: err })
  }
}
