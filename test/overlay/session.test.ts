/**
 * Request sessions between real libp2p nodes (memory transport): many requests on one stream,
 * failures by id, and bad frames from a peer that writes the wire format by hand.
 */
import { describe, it, expect, afterEach } from 'vitest'
import { createOverlay, createRequestSessions, type MoltLibp2p, type RequestSessions, type RequestSessionsInit } from '../../src/overlay/index.ts'
import { eventually, memoryAddress, rejection } from '../helpers.ts'
import type { PeerId, Stream } from '@libp2p/interface'

const PROTOCOL = '/molt/stest/echo/1.0.0'

/** The frame format written out independently of the implementation: id, kind, length, body. */
function frame (id: number, kind: number, body: Uint8Array): Uint8Array {
  const varint = (n: number): number[] => {
    const out: number[] = []
    while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
    out.push(n)
    return out
  }
  return new Uint8Array([...varint(id), kind, ...varint(body.byteLength), ...body])
}

/** Reads frames a raw stream receives: [id, kind, body]. */
function frames (stream: Stream): Array<[number, number, Uint8Array]> {
  const got: Array<[number, number, Uint8Array]> = []
  let buffer = new Uint8Array(0)
  stream.addEventListener('message', (evt) => {
    const data = evt.data.subarray()
    const next = new Uint8Array(buffer.byteLength + data.byteLength)
    next.set(buffer)
    next.set(data, buffer.byteLength)
    buffer = next
    while (buffer.byteLength >= 3) {
      // ids and lengths in these tests stay below 128: one byte each
      const length = buffer[2] as number
      if (buffer.byteLength < 3 + length) break
      got.push([buffer[0] as number, buffer[1] as number, buffer.slice(3, 3 + length)])
      buffer = buffer.slice(3 + length)
    }
  })
  return got
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const str = (b: Uint8Array): string => new TextDecoder().decode(b)

describe('request sessions', () => {
  const nodes: MoltLibp2p[] = []
  const sessions: RequestSessions[] = []
  afterEach(async () => {
    await Promise.allSettled(sessions.splice(0).map(async s => { await s.stop() }))
    await Promise.allSettled(nodes.splice(0).map(async n => { await n.stop() }))
  })

  async function node (): Promise<MoltLibp2p> {
    const n = await createOverlay({ system: 'stest', profile: 'local', listen: [memoryAddress()] })
    nodes.push(n)
    return n
  }

  async function sessionsOn (libp2p: MoltLibp2p, init: Partial<RequestSessionsInit> = {}): Promise<RequestSessions> {
    const s = createRequestSessions({ libp2p }, { protocol: PROTOCOL, ...init })
    await s.start()
    sessions.push(s)
    return s
  }

  /** A server whose handler answers `echo:<request>` after the named gate opens (if any). */
  async function pair (server: Partial<RequestSessionsInit> = {}, client: Partial<RequestSessionsInit> = {}): Promise<{ a: MoltLibp2p, b: MoltLibp2p, client: RequestSessions, server: RequestSessions, peer: PeerId }> {
    const a = await node()
    const b = await node()
    const s = await sessionsOn(b, { handler: async (request) => text(`echo:${str(request)}`), ...server })
    const c = await sessionsOn(a, client)
    await a.dial(b.getMultiaddrs())
    return { a, b, client: c, server: s, peer: b.peerId }
  }

  function streamsOf (libp2p: MoltLibp2p, peer: PeerId): Stream[] {
    return libp2p.getConnections(peer).flatMap(c => c.streams).filter(s => s.protocol === PROTOCOL)
  }

  it('carries many concurrent requests on one stream, each reply to its own caller', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const { a, client, peer } = await pair({
      // odd requests wait at the gate, so replies come back out of order
      handler: async (request) => {
        if (Number(str(request)) % 2 === 1) await gate
        return text(`echo:${str(request)}`)
      }
    })
    const pending = Array.from({ length: 20 }, async (_, i) => str(await client.request(peer, text(String(i)))))
    await eventually(async () => (await Promise.race([pending[0], new Promise(resolve => setTimeout(() => { resolve(undefined) }, 10))])) != null, 'the even requests are answered first')
    release()
    expect(await Promise.all(pending)).toEqual(Array.from({ length: 20 }, (_, i) => `echo:${i}`))
    expect(client.outbound).toBe(1)
    expect(streamsOf(a, peer)).toHaveLength(1)
    // and the next request goes on the same stream
    const before = streamsOf(a, peer)[0]?.id
    expect(str(await client.request(peer, text('again')))).toBe('echo:again')
    expect(streamsOf(a, peer)[0]?.id).toBe(before)
  })

  it('refuses an oversized request by id, skips its bytes and keeps serving on the session', async () => {
    const rejected: string[] = []
    const { a, client, peer } = await pair({ maxRequestBytes: 100, onRejected: (_peer, err) => { rejected.push(err.name) } }, { maxRequestBytes: 10_000 })
    const big = await rejection(client.request(peer, new Uint8Array(5_000).fill(7)))
    expect(big.name).toBe('MessageTooLargeError')
    expect(big.message).toContain('5000 bytes exceeds 100')
    expect(rejected).toEqual(['MessageTooLargeError'])
    expect(str(await client.request(peer, text('small')))).toBe('echo:small')
    expect(streamsOf(a, peer)).toHaveLength(1)
    // the sender's own limit is checked before anything is sent
    const local = await rejection(client.request(peer, new Uint8Array(20_000)))
    expect(local.name).toBe('MessageTooLargeError')
  })

  it('fails a reply over the caller\'s limit, and one over the handler side\'s limit, typed', async () => {
    const { client, peer } = await pair({ handler: async (request) => new Uint8Array(Number(str(request))), maxResponseBytes: 1_000 }, { maxResponseBytes: 500 })
    expect((await client.request(peer, text('400'))).byteLength).toBe(400)
    const callerLimit = await rejection(client.request(peer, text('800')))
    expect(callerLimit.name).toBe('MessageTooLargeError')
    const serverLimit = await rejection(client.request(peer, text('2000')))
    expect(serverLimit.name).toBe('MessageTooLargeError')
    expect((await client.request(peer, text('10'))).byteLength).toBe(10)
    expect(client.outbound).toBe(1)
  })

  it('answers busy beyond maxPendingPerSession and a handler failure as UnavailableError', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const { client, peer } = await pair({
      maxPendingPerSession: 2,
      handler: async (request) => {
        if (str(request) === 'throw') throw new Error('the handler broke')
        await gate
        return text('done')
      }
    })
    const results = Array.from({ length: 3 }, async () => await client.request(peer, text('wait')).then(() => 'ok', (err: Error) => err.name))
    const busy = await Promise.race(results)
    expect(busy).toBe('UnavailableError')
    release()
    expect((await Promise.all(results)).sort()).toEqual(['UnavailableError', 'ok', 'ok'])
    const failed = await rejection(client.request(peer, text('throw')))
    expect(failed.name).toBe('UnavailableError')
    expect(failed.message).toContain('the handler broke')
    expect(str(await client.request(peer, text('after')))).toBe('done')
  })

  it('an aborted request rejects with the reason; its late reply is dropped and the session goes on', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const { client, peer } = await pair({
      handler: async (request) => {
        if (str(request) === 'slow') await gate
        return text(`echo:${str(request)}`)
      }
    })
    const controller = new AbortController()
    const slow = client.request(peer, text('slow'), { signal: controller.signal })
    controller.abort(new Error('gave up'))
    expect((await rejection(slow)).message).toBe('gave up')
    release()
    expect(str(await client.request(peer, text('next')))).toBe('echo:next')
    expect((await rejection(client.request(peer, text('x'), { signal: AbortSignal.abort(new Error('already')) }))).message).toBe('already')
  })

  it('a closed connection fails what waits on it; the next request opens a new session', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const { a, client, peer } = await pair({ handler: async () => { await gate; return text('done') } })
    const waiting = client.request(peer, text('held'))
    await eventually(() => streamsOf(a, peer).length === 1, 'the session is open')
    await a.hangUp(peer)
    expect((await rejection(waiting)).name).toBe('UnavailableError')
    release()
    expect(str(await client.request(peer, text('again')))).toBe('done')
    expect(client.outbound).toBe(1)
  })

  it('a peer without the protocol, or unreachable, is UnavailableError', async () => {
    const a = await node()
    const b = await node()
    const client = await sessionsOn(a)
    await a.dial(b.getMultiaddrs())
    const refused = await rejection(client.request(b.peerId, text('anyone?')))
    expect(refused.name).toBe('UnavailableError')
    expect((refused.cause as Error | undefined)?.name).toBe('UnsupportedProtocolError')
    await b.stop()
    expect((await rejection(client.request(b.peerId, text('gone?')))).name).toBe('UnavailableError')
  })

  it('resets a session that breaks the framing, and goes on serving others', async () => {
    const rejected: string[] = []
    const { a, client, peer } = await pair({ onRejected: (_peer, err) => { rejected.push(err.name) } })
    // a raw peer: a well-formed request is answered in the wire format
    const raw = await a.dialProtocol(peer, PROTOCOL)
    const got = frames(raw)
    raw.send(frame(5, 0, text('hi')))
    await eventually(() => got.length === 1, 'the raw request is answered')
    expect(got[0]?.[0]).toBe(5)
    expect(got[0]?.[1]).toBe(1)
    expect(str(got[0]?.[2] as Uint8Array)).toBe('echo:hi')
    // a reply sent to the side that answers is a protocol error: the stream is reset
    raw.send(frame(6, 1, text('not a request')))
    await eventually(() => raw.status !== 'open', 'the session is reset')
    // a varint that never ends
    const raw2 = await a.dialProtocol(peer, PROTOCOL)
    raw2.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))
    await eventually(() => raw2.status !== 'open', 'the second session is reset')
    expect(rejected).toEqual(['SessionProtocolError', 'SessionProtocolError'])
    expect(str(await client.request(peer, text('still here')))).toBe('echo:still here')
  })

  it('closes a session idle for idleTimeoutMs at both ends; stop() fails what waits', async () => {
    const { a, b, client, peer } = await pair({}, { idleTimeoutMs: 200 })
    expect(str(await client.request(peer, text('once')))).toBe('echo:once')
    expect(client.outbound).toBe(1)
    await eventually(() => client.outbound === 0 && streamsOf(a, peer).length === 0 && streamsOf(b, a.peerId).length === 0, 'the idle session is closed at both ends', 5_000)
    expect(str(await client.request(peer, text('twice')))).toBe('echo:twice')

    let entered!: () => void
    const inHandler = new Promise<void>(resolve => { entered = resolve })
    const hanging = await sessionsOn(b, { protocol: `${PROTOCOL}-hang`, handler: async (_request, { signal }) => { entered(); return await new Promise((_resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }) }) } })
    const caller = await sessionsOn(a, { protocol: `${PROTOCOL}-hang` })
    const held = caller.request(peer, text('hang'))
    await inHandler
    await caller.stop()
    const err = await rejection(held)
    expect(err.name).toBe('UnavailableError')
    expect((await rejection(caller.request(peer, text('after stop')))).name).toBe('UnavailableError')
    await hanging.stop()
  })
})
