/**
 * The RPC codec and the dispatch rule, without a network.
 */
import * as cbor from '@ipld/dag-cbor'
import { describe, it, expect } from 'vitest'
import {
  decodeReply, decodeRequest, encodeReply, encodeRequest, errorFromWire, isRetryable, normaliseState, route,
  WIRE_ERROR_NAMES, type LayerState
} from '../../src/layer/index.ts'

const state = (s: Partial<LayerState> & { version: number }): ReturnType<typeof normaliseState> =>
  normaliseState({ class: 'c', minimumVersion: 0, past: [], future: [], quiescing: false, ...s })

describe('rpc codec', () => {
  it('round-trips requests and replies', () => {
    const request = { version: 3, class: 'chord-node', method: 'lookup', args: [1, 'k', new Uint8Array([1]), { x: [null] }], object: 'ring', deadlineMs: 900 }
    expect(decodeRequest(encodeRequest(request), 1024)).toEqual(request)
    const bare = { version: 0, class: '', method: 'm', args: [] }
    expect(decodeRequest(encodeRequest(bare), 1024)).toEqual(bare)
    expect(decodeReply(encodeReply({ version: 2, class: 'c', ok: undefined }), 1024)).toEqual({ version: 2, class: 'c', ok: null })
    expect(decodeReply(encodeReply({ version: 2, class: 'c', ok: { a: 1 } }), 1024)).toEqual({ version: 2, class: 'c', ok: { a: 1 } })
    const error = { name: 'RemoteError', message: 'boom', remoteName: 'TypeError' }
    expect(decodeReply(encodeReply({ version: 2, class: 'c', error }), 1024)).toEqual({ version: 2, class: 'c', error })
  })

  it('refuses anything but the exact shape', () => {
    const bad = [
      cbor.encode('x'), cbor.encode(null), cbor.encode(new Uint8Array(3)),
      cbor.encode({ v: 1.5, c: 'c', m: 'm', a: [] }),
      cbor.encode({ v: Number.MAX_SAFE_INTEGER + 1, c: 'c', m: 'm', a: [] }),
      cbor.encode({ v: 1, c: 7, m: 'm', a: [] }),
      cbor.encode({ v: 1, c: 'c', m: 'x'.repeat(129), a: [] }),
      cbor.encode({ v: 1, c: 'c', m: 'm' }),
      cbor.encode({ v: 1, c: 'c', m: 'm', a: [], o: '' }),
      cbor.encode({ v: 1, c: 'c', m: 'm', a: [], d: -5 }),
      new Uint8Array([0xa1])
    ]
    for (const bytes of bad) {
      expect(() => decodeRequest(bytes, 1024)).toThrow(expect.objectContaining({ name: 'RpcDecodeError' }))
    }
    expect(() => decodeRequest(new Uint8Array(2000), 1024)).toThrow(expect.objectContaining({ name: 'MessageTooLargeError' }))
    const badReplies = [
      cbor.encode({ v: 1, c: 'c' }),
      cbor.encode({ v: 1, c: 'c', ok: 1, e: { n: 'x', m: 'y' } }),
      cbor.encode({ v: 1, c: 'c', e: 'x' }),
      cbor.encode({ v: 1, c: 'c', e: { n: 'x' } }),
      cbor.encode({ v: 1, c: 'c', e: { n: 'x', m: 'y', stack: 'z' } }),
      cbor.encode({ v: 1, c: 'c', e: { n: 'x', m: 'y'.repeat(2000) } })
    ]
    for (const bytes of badReplies) {
      expect(() => decodeReply(bytes, 4096)).toThrow(expect.objectContaining({ name: 'RpcDecodeError' }))
    }
  })

  it('refuses to encode what is not dag-cbor', () => {
    expect(() => encodeRequest({ version: 1, class: 'c', method: 'm', args: [undefined] })).toThrow(expect.objectContaining({ name: 'RpcDecodeError' }))
    expect(() => encodeReply({ version: 1, class: 'c', ok: { f: () => 1 } })).toThrow(expect.objectContaining({ name: 'RpcDecodeError' }))
  })

  it('maps every wire error name to its class; unknown names arrive as RemoteError', () => {
    for (const name of WIRE_ERROR_NAMES) {
      const err = errorFromWire(name, 'm')
      expect(err.name).toBe(name)
      expect(err.message).toBe('m')
    }
    expect(errorFromWire('EvilError', 'x').name).toBe('RemoteError')
    expect(WIRE_ERROR_NAMES.filter(n => isRetryable(errorFromWire(n, '')))).toEqual(['UpgradingError', 'CallTimeoutError', 'UnavailableError'])
  })
})

describe('dispatch rule', () => {
  it('routes by label', () => {
    const s = state({ version: 5, minimumVersion: 2, past: [2, 3, 4], future: [6, 7] })
    expect(route(s, 5)).toEqual({ target: { kind: 'current', version: 5 } })
    expect(route(s, 3)).toEqual({ target: { kind: 'past', version: 3 } })
    expect(route(s, 7)).toEqual({ target: { kind: 'future', version: 7 } })
    expect(route(s, 8)).toEqual({ wait: true })
    expect((route(s, 1) as { error: Error }).error.name).toBe('VersionRetiredError')
    const gap = state({ version: 5, past: [2, 4] })
    expect((route(gap, 3) as { error: Error }).error.name).toBe('VersionUnknownError')
    expect((route(gap, 2) as { error: Error }).error.name).toBe('VersionUnknownError')
    expect(route(gap, 4)).toEqual({ target: { kind: 'past', version: 4 } })
    expect(route(state({ version: 5, future: [7] }), 7)).toEqual({ wait: true })
    const quiet = state({ version: 5, past: [4], future: [6], quiescing: true })
    for (const v of [4, 5, 6, 9]) {
      expect((route(quiet, v) as { error: Error }).error.name).toBe('UpgradingError')
    }
  })

  it('refuses malformed states', () => {
    expect(() => state({ version: 5, past: [5] })).toThrow(expect.objectContaining({ name: 'InvalidOptionError' }))
    expect(() => state({ version: 5, future: [4] })).toThrow(expect.objectContaining({ name: 'InvalidOptionError' }))
    expect(() => state({ version: 5, minimumVersion: 6 })).toThrow(expect.objectContaining({ name: 'InvalidOptionError' }))
    expect(() => state({ version: -1 })).toThrow(expect.objectContaining({ name: 'InvalidOptionError' }))
  })
})
