/**
 * Status records: strict, bounded decoding; signatures by the key of the peer a record names, in
 * the status domain.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import * as cbor from '@ipld/dag-cbor'
import { describe, expect, it } from 'vitest'
import {
  BadStatusSignatureError, decodeSignedStatus, encodeSignedStatus, signStatus, StatusDecodeError, StatusTooLargeError,
  WrongStatusSystemError, type StatusRecord
} from '../../src/schedule/index.ts'

async function fixture (): Promise<{ record: StatusRecord, key: Awaited<ReturnType<typeof generateKeyPair>> }> {
  const key = await generateKeyPair('Ed25519')
  const record: StatusRecord = {
    peer: peerIdFromPrivateKey(key).toString(), class: 'app', version: 1, target: 2, phase: 'intent', healthy: true,
    tags: { group: 'g1' }, seq: 7, at: 1_700_000_000_000
  }
  return { record, key }
}

describe('status records', () => {
  it('round-trip, small', async () => {
    const { record, key } = await fixture()
    const other = await generateKeyPair('Ed25519')
    const withDefer = { ...record, defer: { peer: peerIdFromPrivateKey(other).toString(), seq: 3 } }
    const bytes = encodeSignedStatus(await signStatus('sys', withDefer, key))
    expect(bytes.byteLength).toBeLessThan(400)
    const decoded = await decodeSignedStatus(bytes, 'sys', { from: record.peer })
    expect(decoded.record).toEqual(withDefer)
  })

  it('refuses a record signed by another key than the named peer\'s (forged)', async () => {
    const { record } = await fixture()
    const forger = await generateKeyPair('Ed25519')
    await expect(signStatus('sys', record, forger)).rejects.toBeInstanceOf(BadStatusSignatureError)
    // forge by hand: body naming the peer, signature by the forger
    const good = await signStatus('sys', { ...record, peer: peerIdFromPrivateKey(forger).toString() }, forger)
    const body = cbor.encode({ ...cbor.decode<Record<string, unknown>>(good.bodyBytes), p: record.peer })
    const forged = cbor.encode({ b: body, s: good.signature })
    await expect(decodeSignedStatus(forged, 'sys')).rejects.toBeInstanceOf(BadStatusSignatureError)
  })

  it('refuses unsigned, tampered, foreign, oversized and malformed records', async () => {
    const { record, key } = await fixture()
    const signed = await signStatus('sys', record, key)
    const unsigned = cbor.encode({ b: signed.bodyBytes, s: new Uint8Array(64) })
    await expect(decodeSignedStatus(unsigned, 'sys')).rejects.toBeInstanceOf(BadStatusSignatureError)
    const tamperedBody = cbor.encode({ ...cbor.decode<Record<string, unknown>>(signed.bodyBytes), f: 4 })
    await expect(decodeSignedStatus(cbor.encode({ b: tamperedBody, s: signed.signature }), 'sys')).rejects.toBeInstanceOf(BadStatusSignatureError)
    await expect(decodeSignedStatus(encodeSignedStatus(signed), 'other')).rejects.toBeInstanceOf(WrongStatusSystemError)
    await expect(decodeSignedStatus(new Uint8Array(5000), 'sys')).rejects.toBeInstanceOf(StatusTooLargeError)
    await expect(decodeSignedStatus(new Uint8Array([0xff, 0x00]), 'sys')).rejects.toBeInstanceOf(StatusDecodeError)
    const extra = cbor.encode({ ...cbor.decode<Record<string, unknown>>(signed.bodyBytes), x: 1 })
    await expect(decodeSignedStatus(cbor.encode({ b: extra, s: signed.signature }), 'sys')).rejects.toBeInstanceOf(StatusDecodeError)
    const badPhase = cbor.encode({ ...cbor.decode<Record<string, unknown>>(signed.bodyBytes), f: 99 })
    await expect(decodeSignedStatus(cbor.encode({ b: badPhase, s: signed.signature }), 'sys')).rejects.toBeInstanceOf(StatusDecodeError)
    const manyTags = cbor.encode({ ...cbor.decode<Record<string, unknown>>(signed.bodyBytes), g: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`t${i}`, 'x'])) })
    await expect(decodeSignedStatus(cbor.encode({ b: manyTags, s: signed.signature }), 'sys')).rejects.toBeInstanceOf(StatusDecodeError)
    await expect(decodeSignedStatus(encodeSignedStatus(signed), 'sys', { from: peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString() })).rejects.toBeInstanceOf(BadStatusSignatureError)
  })
})
