/**
 * The upgrade layer between real libp2p nodes (memory transport) at different versions.
 */
import * as cbor from '@ipld/dag-cbor'
import { describe, it, expect, afterEach } from 'vitest'
import { createRequestSessions, type MoltLibp2p, type RequestSessions } from '../../src/overlay/index.ts'
import { decodeReply, encodeRequest, isRetryable, type VersionSeen } from '../../src/layer/index.ts'
import { appNode, mesh, type AppNode } from './setup.ts'
import { createOverlay } from '../../src/overlay/index.ts'
import { eventually, memoryAddress, rejection } from '../helpers.ts'
import { SYSTEM } from './setup.ts'

describe('upgrade layer', () => {
  const nodes: AppNode[] = []
  const others: MoltLibp2p[] = []
  const raws: RequestSessions[] = []
  afterEach(async () => {
    await Promise.allSettled(raws.splice(0).map(async r => { await r.stop() }))
    await Promise.allSettled(nodes.splice(0).map(async n => { await n.stop() }))
    await Promise.allSettled(others.splice(0).map(async n => { await n.stop() }))
  })

  async function start (...states: Array<Parameters<typeof appNode>[0]>): Promise<AppNode[]> {
    const started = await Promise.all(states.map(async s => await appNode(s)))
    nodes.push(...started)
    await mesh(started)
    return started
  }

  it('dispatches by label to the current object, the past-SO chain and the future-SO chain', async () => {
    // A at v1 with the future-SO for 2; B at v2 with past 1 and future 3; C at v3 with past 1, 2
    const [a, b, c] = await start(
      { version: 1, future: [2] },
      { version: 2, past: [1], future: [3] },
      { version: 3, past: [1, 2] }
    ) as [AppNode, AppNode, AppNode]
    const A = a.libp2p.peerId
    const B = b.libp2p.peerId
    const C = c.libp2p.peerId

    // same version: the current object
    expect(await a.layer.call(A, 'trail')).toEqual(['current@1'])
    expect(await b.layer.call(B, 'trail')).toEqual(['current@2'])
    // older caller: past-SO chain
    expect(await a.layer.call(B, 'trail')).toEqual(['past@1', 'current@2'])
    expect(await a.layer.call(C, 'trail')).toEqual(['past@1', 'past@2', 'current@3'])
    expect(await b.layer.call(C, 'trail')).toEqual(['past@2', 'current@3'])
    // newer caller: future-SO chain
    expect(await b.layer.call(A, 'trail')).toEqual(['future@2', 'current@1'])
    expect(await c.layer.call(B, 'trail')).toEqual(['future@3', 'current@2'])
    expect(c.targets).toEqual([{ kind: 'past', version: 1 }, { kind: 'past', version: 2 }])
    expect(a.targets.at(-1)).toEqual({ kind: 'future', version: 2 })

    // state written through an SO is the object's state, visible at every version
    await c.layer.call(A, 'add', ['x'], { version: 2 })
    expect(a.items.has('x')).toBe(true)
    expect(await a.layer.call(A, 'has', ['x'])).toBe(true)
    await a.layer.call(C, 'add', ['y'])
    expect(await c.layer.call(C, 'has', ['y'])).toBe(true)
  })

  it('fails VersionRetired below the minimum supported version, and VersionUnknown with no past-SO', async () => {
    const [a, b, c] = await start(
      { version: 1 },
      { version: 2 },
      { version: 3, past: [1, 2], minimumVersion: 2 }
    ) as [AppNode, AppNode, AppNode]
    const retired = await rejection(a.layer.call(c.libp2p.peerId, 'trail'))
    expect(retired.name).toBe('VersionRetiredError')
    expect(isRetryable(retired)).toBe(false)
    expect(await b.layer.call(c.libp2p.peerId, 'trail')).toEqual(['past@2', 'current@3'])
    const unknown = await rejection(a.layer.call(b.libp2p.peerId, 'trail'))
    expect(unknown.name).toBe('VersionUnknownError')
  })

  it('answers Upgrading at every version while quiescing; a retry on an alternative peer succeeds', async () => {
    const [a, b, c] = await start({ version: 1 }, { version: 1, future: [2] }, { version: 1 }) as [AppNode, AppNode, AppNode]
    b.layer.update({ quiescing: true })
    for (const version of [1, 2]) {
      const err = await rejection(a.layer.call(b.libp2p.peerId, 'trail', [], { version }))
      expect(err.name).toBe('UpgradingError')
      expect(isRetryable(err)).toBe(true)
    }
    expect(await a.layer.call([b.libp2p.peerId, c.libp2p.peerId], 'add', ['k'])).toBe(null)
    expect(c.items.has('k')).toBe(true)
    expect(b.items.has('k')).toBe(false)
    b.layer.update({ quiescing: false })
    expect(await a.layer.call(b.libp2p.peerId, 'trail')).toEqual(['current@1'])
  })

  it('drains: idle() resolves once in-flight calls finish after quiescing', async () => {
    const [a, b] = await start({ version: 1 }, { version: 1 }) as [AppNode, AppNode]
    const slow = a.layer.call(b.libp2p.peerId, 'slow')
    await eventually(() => b.layer.executing === 1, 'the slow call runs')
    b.layer.update({ quiescing: true })
    expect((await rejection(a.layer.call(b.libp2p.peerId, 'trail'))).name).toBe('UpgradingError')
    await b.layer.idle()
    expect(b.layer.executing).toBe(0)
    expect(await slow).toBe('slow done')
  })

  it('an unknown newer label emits version:unknown and the call completes once the owner installs it', async () => {
    const [a, c] = await start({ version: 1 }, { version: 3, past: [1, 2] }) as [AppNode, AppNode]
    const unknown: Array<{ version: number, peer: string }> = []
    a.layer.events.addEventListener('version:unknown', (e) => {
      unknown.push({ version: e.detail.version, peer: e.detail.peer.toString() })
      // the manager's part: pull, fetch, install the future-SOs on the fly
      setTimeout(() => {
        a.install(2)
        a.install(3)
        a.layer.update({ future: [2, 3] })
      }, 50)
    })
    expect(await c.layer.call(a.libp2p.peerId, 'trail', [], { deadlineMs: 5000 })).toEqual(['future@3', 'future@2', 'current@1'])
    expect(unknown).toEqual([{ version: 3, peer: c.libp2p.peerId.toString() }])
    expect(a.layer.state.future).toEqual([2, 3])
  })

  it('an unknown newer label never installed fails typed within the deadline', async () => {
    const [a, c] = await start({ version: 1 }, { version: 3 }) as [AppNode, AppNode]
    let events = 0
    a.layer.events.addEventListener('version:unknown', () => { events++ })
    const err = await rejection(c.layer.call(a.libp2p.peerId, 'trail', [], { deadlineMs: 1000 }))
    expect(['VersionUnknownError', 'CallTimeoutError']).toContain(err.name)
    expect(events).toBe(1)
    // the node keeps serving
    expect(await a.layer.call(a.libp2p.peerId, 'trail')).toEqual(['current@1'])
  })

  it('emits version:seen for the labels of requests and replies', async () => {
    const [a, b] = await start({ version: 1 }, { version: 2, past: [1], class: 'server' }) as [AppNode, AppNode]
    const seenA: VersionSeen[] = []
    const seenB: VersionSeen[] = []
    a.layer.events.addEventListener('version:seen', (e) => { seenA.push(e.detail) })
    b.layer.events.addEventListener('version:seen', (e) => { seenB.push(e.detail) })
    await a.layer.call(b.libp2p.peerId, 'trail')
    expect(seenA).toHaveLength(1)
    expect(seenA[0]).toMatchObject({ version: 2, class: 'server', source: 'reply' })
    expect(seenA[0]!.peer.equals(b.libp2p.peerId)).toBe(true)
    expect(seenB).toHaveLength(1)
    expect(seenB[0]).toMatchObject({ version: 1, class: 'cache', source: 'request' })
    expect(seenB[0]!.peer.equals(a.libp2p.peerId)).toBe(true)
    // error replies carry labels too
    b.layer.update({ quiescing: true })
    await rejection(a.layer.call(b.libp2p.peerId, 'trail'))
    expect(seenA).toHaveLength(2)
    expect(seenA[1]).toMatchObject({ version: 2, source: 'reply' })
  })

  it('answers garbage, malformed and oversized requests with typed errors and keeps serving', async () => {
    const [b] = await start({ version: 2 }) as [AppNode]
    const raw = await createOverlay({ system: SYSTEM, profile: 'local', listen: [memoryAddress()] })
    others.push(raw)
    await raw.dial(b.libp2p.getMultiaddrs())
    const rejected: string[] = []
    b.layer.events.addEventListener('request:rejected', (e) => { rejected.push(e.detail.reason) })
    // a peer that sends raw bytes on the layer's protocol, with a larger size limit of its own
    const session = createRequestSessions({ libp2p: raw }, { protocol: b.layer.protocol, maxRequestBytes: 100_000 })
    raws.push(session)
    await session.start()
    const send = async (bytes: Uint8Array): Promise<ReturnType<typeof decodeReply>> =>
      decodeReply(await session.request(b.libp2p.peerId, bytes), 65_536)
    const cases: Array<[Uint8Array, string]> = [
      [new Uint8Array([0xff, 0x00, 0x13, 0x37]), 'RpcDecodeError'],
      [cbor.encode([1, 2, 3]), 'RpcDecodeError'],
      [cbor.encode({ v: -1, c: 'x', m: 'trail', a: [] }), 'RpcDecodeError'],
      [cbor.encode({ v: 2, c: 'x', m: 'trail', a: [], extra: 1 }), 'RpcDecodeError'],
      [cbor.encode({ v: 2, c: 'x', m: 'trail', a: 'not-an-array' }), 'RpcDecodeError'],
      [cbor.encode({ v: 2, c: 'x', m: '', a: [] }), 'RpcDecodeError'],
      [cbor.encode({ v: 2, c: 'x', m: 'trail', a: [], d: 0 }), 'RpcDecodeError']
    ]
    for (const [bytes, name] of cases) {
      const reply = await send(bytes)
      expect('error' in reply && reply.error.name).toBe(name)
      expect(reply.version).toBe(2)
    }
    // an oversized request is refused by the session before any decoding, and its bytes skipped
    const tooLarge = await rejection(send(new Uint8Array(70_000)))
    expect(tooLarge.name).toBe('MessageTooLargeError')
    expect(rejected).toEqual([...cases.map(([, name]) => name), 'MessageTooLargeError'])
    expect(session.outbound).toBe(1)
    // a well-formed request from the same raw peer is served
    const ok = await send(encodeRequest({ version: 2, class: 'raw', method: 'trail', args: [] }))
    expect(ok).toEqual({ version: 2, class: 'cache', ok: ['current@2'] })
    // an oversized call from a layer fails typed before it is sent
    const [a] = await start({ version: 2 }) as [AppNode]
    await a.libp2p.dial(b.libp2p.getMultiaddrs())
    const big = await rejection(a.layer.call(b.libp2p.peerId, 'add', ['x'.repeat(70_000)]))
    expect(big.name).toBe('MessageTooLargeError')
    expect(await a.layer.call(b.libp2p.peerId, 'trail')).toEqual(['current@2'])
  })

  it('an app exception becomes RemoteError (message only); an SO refusal becomes SimulationRefused', async () => {
    const [a, b] = await start({ version: 1, future: [2] }, { version: 2, past: [1] }) as [AppNode, AppNode]
    const remote = await rejection(a.layer.call(b.libp2p.peerId, 'fail', [], { version: 2 }))
    expect(remote.name).toBe('RemoteError')
    expect(remote.message).toBe('the app broke')
    expect((remote as Error & { remoteName?: string }).remoteName).toBe('TypeError')
    expect(remote.stack ?? '').not.toContain('setup.ts')
    expect(isRetryable(remote)).toBe(false)
    // replies the layer cannot send are typed too
    expect((await rejection(a.layer.call(b.libp2p.peerId, 'big', [], { version: 2 }))).name).toBe('MessageTooLargeError')
    expect((await rejection(a.layer.call(b.libp2p.peerId, 'weird', [], { version: 2 }))).name).toBe('RemoteError')
    // unknown method at an SO: the host throws, the caller sees RemoteError
    expect((await rejection(a.layer.call(b.libp2p.peerId, 'remove', ['x']))).name).toBe('RemoteError')
    // a v2 client removing through the v1 node's future-SO: the Archive cannot shrink
    await b.layer.call(a.libp2p.peerId, 'add', ['x'])
    const refused = await rejection(b.layer.call(a.libp2p.peerId, 'remove', ['x']))
    expect(refused.name).toBe('SimulationRefusedError')
    expect(isRetryable(refused)).toBe(false)
    expect(a.items.has('x')).toBe(true)
    // removing at the v2 node itself is fine
    await b.layer.call(b.libp2p.peerId, 'add', ['y'])
    expect(await b.layer.call(b.libp2p.peerId, 'remove', ['y'])).toBe(true)
  })

  it('an AbortSignal cancels a pending call; a deadline ends it with CallTimeoutError', async () => {
    const hang = await appNode({ version: 1 }, {
      invoke: async ({ signal }) => await new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => { reject(new Error('aborted at the callee')) })
      })
    })
    nodes.push(hang)
    const [a] = await start({ version: 1 })
    await a!.libp2p.dial(hang.libp2p.getMultiaddrs())
    const controller = new AbortController()
    const pending = a!.layer.call(hang.libp2p.peerId, 'anything', [], { signal: controller.signal, deadlineMs: 30_000 })
    await eventually(() => hang.layer.executing === 1, 'the call reaches the object')
    controller.abort()
    const aborted = await rejection(pending)
    expect(aborted.name).toBe('AbortError')
    expect(isRetryable(aborted)).toBe(false)

    const timedOut = await rejection(a!.layer.call(hang.libp2p.peerId, 'anything', [], { deadlineMs: 500 }))
    expect(timedOut.name).toBe('CallTimeoutError')
    expect(isRetryable(timedOut)).toBe(true)
    // an already-aborted signal never sends
    expect((await rejection(a!.layer.call(hang.libp2p.peerId, 'x', [], { signal: AbortSignal.abort() }))).name).toBe('AbortError')
  })

  it('an unreachable peer is Unavailable and the next alternative answers', async () => {
    const [a, b, c] = await start({ version: 1 }, { version: 1 }, { version: 1 }) as [AppNode, AppNode, AppNode]
    await b.layer.stop()
    const err = await rejection(a.layer.call(b.libp2p.peerId, 'trail'))
    expect(err.name).toBe('UnavailableError')
    expect(await a.layer.call([b.libp2p.peerId, c.libp2p.peerId], 'trail')).toEqual(['current@1'])
  })

  it('stream and concurrency limits overflow to Unavailable, and the node keeps serving', async () => {
    let release!: () => void
    const gate = new Promise<void>(resolve => { release = resolve })
    const busy = await appNode({ version: 1 }, {
      maxCallsPerPeer: 2,
      maxConcurrentCalls: 64,
      invoke: async () => { await gate; return 'done' }
    })
    const narrow = await appNode({ version: 1 }, {
      maxConcurrentCalls: 1,
      invoke: async () => { await gate; return 'done' }
    })
    nodes.push(busy, narrow)
    const [a] = await start({ version: 1 }) as [AppNode]
    await a.libp2p.dial(busy.libp2p.getMultiaddrs())
    await a.libp2p.dial(narrow.libp2p.getMultiaddrs())
    const failed = { busy: [] as string[], narrow: [] as string[] }
    const settle = async (p: Promise<unknown>, into: string[]): Promise<string> =>
      await p.then(() => 'ok', (err: Error) => { into.push(err.name); return err.name })

    const streams = Array.from({ length: 4 }, async () => await settle(a.layer.call(busy.libp2p.peerId, 'x', [], { deadlineMs: 10_000 }), failed.busy))
    const calls = Array.from({ length: 3 }, async () => await settle(a.layer.call(narrow.libp2p.peerId, 'x', [], { deadlineMs: 10_000 }), failed.narrow))
    // the overflowing calls fail while the admitted ones are still held at the gate
    await eventually(() => failed.busy.length === 2 && failed.narrow.length === 2, 'the overflowing calls fail')
    expect(busy.layer.executing).toBe(2)
    expect(narrow.layer.executing).toBe(1)
    expect([...failed.busy, ...failed.narrow]).toEqual(Array(4).fill('UnavailableError'))
    release()
    const results = [...await Promise.all(streams), ...await Promise.all(calls)]
    expect(results.filter(r => r === 'ok')).toHaveLength(3)
    expect(await a.layer.call(busy.libp2p.peerId, 'x')).toBe('done')
    expect(await a.layer.call(narrow.libp2p.peerId, 'x')).toBe('done')
  })
})
