import * as dagCbor from '@ipld/dag-cbor'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, it, expect } from 'vitest'
import { decodeReply, encodeReply, MAX_REFERRALS } from '../../src/bundle/protocol.ts'

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
})
