import * as dagCbor from '@ipld/dag-cbor'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, it, expect } from 'vitest'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { decodeReply, decodeRequest, encodeReply, encodeRequest, MAX_REFERRALS, MAX_WANT } from '../../src/bundle/protocol.ts'

describe('block exchange wire', () => {
  it('round-trips a reply that refers the asker to other peers', async () => {
    const id = peerIdFromPrivateKey(await generateKeyPair('Ed25519'))
    const addr = multiaddr('/ip4/127.0.0.1/tcp/4001')
    const reply = decodeReply(encodeReply({ blocks: [], busy: true, peers: [{ id, addrs: [addr] }] }))
    expect(reply.busy).toBe(true)
    expect(reply.peers).toHaveLength(1)
    expect(reply.peers?.[0]?.id.equals(id)).toBe(true)
    expect(reply.peers?.[0]?.addrs.map(a => a.toString())).toEqual([addr.toString()])
    // no referrals, no field
    expect(decodeReply(encodeReply({ blocks: [] }))).toEqual({ blocks: [] })
  })

  it('refuses malformed referrals and undecodable bytes with InvalidBundleError', async () => {
    const id = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toMultihash().bytes
    const bad: unknown[] = [
      { blocks: [], peers: 'x' },
      { blocks: [], peers: Array.from({ length: MAX_REFERRALS + 1 }, () => ({ id, addrs: [] })) },
      { blocks: [], peers: [{ id: new Uint8Array([1, 2, 3]), addrs: [] }] },
      { blocks: [], peers: [{ id, addrs: [new Uint8Array([0xff, 0xff, 0xff])] }] },
      { blocks: [], peers: [{ id, addrs: ['not bytes'] }] },
      { blocks: [], peers: [{ id, addrs: Array.from({ length: 5 }, () => multiaddr('/ip4/127.0.0.1/tcp/1').bytes) }] },
      { blocks: [], peers: [null] }
    ]
    for (const value of bad) {
      expect(() => decodeReply(dagCbor.encode(value))).toThrow(expect.objectContaining({ name: 'InvalidBundleError' }))
    }
    expect(() => decodeReply(new Uint8Array([0xff, 0x00]))).toThrow(expect.objectContaining({ name: 'InvalidBundleError' }))
  })

  it('round-trips a holds question and its answer; a request or reply without them reads as none', async () => {
    const a = CID.createV1(0x71, await sha256.digest(new Uint8Array([1])))
    const b = CID.createV1(0x55, await sha256.digest(new Uint8Array([2])))
    const request = decodeRequest(encodeRequest([b], [a]))
    expect(request.want.map(String)).toEqual([b.toString()])
    expect(request.holds.map(String)).toEqual([a.toString()])
    // what a peer from before `holds` sends, and answers
    expect(decodeRequest(dagCbor.encode({ want: [b] })).holds).toEqual([])
    expect(decodeReply(encodeReply({ blocks: [], held: [a] })).held?.map(String)).toEqual([a.toString()])
    expect(decodeReply(dagCbor.encode({ blocks: [] })).held).toBeUndefined()
  })

  it('refuses malformed requests and `held` lists with InvalidBundleError', async () => {
    const a = CID.createV1(0x71, await sha256.digest(new Uint8Array([1])))
    const badRequests: unknown[] = [
      null, 7, { want: 'x' }, { want: [a], holds: 'x' }, { want: [], holds: ['not a cid'] },
      { want: [], holds: Array.from({ length: MAX_WANT + 1 }, () => a) }
    ]
    for (const value of badRequests) {
      expect(() => decodeRequest(dagCbor.encode(value))).toThrow(expect.objectContaining({ name: 'InvalidBundleError' }))
    }
    expect(() => decodeRequest(new Uint8Array([0xff, 0x00]))).toThrow(expect.objectContaining({ name: 'InvalidBundleError' }))
    for (const held of ['x', [1], Array.from({ length: MAX_WANT + 1 }, () => a)]) {
      expect(() => decodeReply(dagCbor.encode({ blocks: [], held }))).toThrow(expect.objectContaining({ name: 'InvalidBundleError' }))
    }
  })
})
