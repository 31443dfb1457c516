/**
 * The block-exchange protocol, `/molt/<system>/bundle/1.0.0`: one request, one reply per stream
 * (over the overlay's `handleRequests` / `sendRequest`).
 *
 * - request (dag-cbor): `{ want: CID[], holds?: CID[] }`, at most {@link MAX_WANT} CIDs each
 * - reply (dag-cbor): `{ blocks: [{ cid, data }], busy?, peers?, held? }`: the wanted blocks the
 *   peer holds (any subset, so partial holders answer with what they have); `busy` when the peer
 *   is already serving as many requests as it allows, so the asker tries someone else; `peers`,
 *   when it is busy: up to {@link MAX_REFERRALS} peers it recently served the wanted blocks to,
 *   `{ id: peer id multihash, addrs: multiaddr bytes[] }`, holders the asker tries instead;
 *   `held`: the bundles named in `holds` the peer holds completely (answered even when busy: it
 *   costs a record lookup each). A peer that predates `holds` ignores it and sends no `held`,
 *   which reads as "holds none".
 */
import * as dagCbor from '@ipld/dag-cbor'
import { peerIdFromMultihash } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { InvalidBundleError } from './errors.ts'
import type { PeerId } from '@libp2p/interface'

/** Most CIDs one request may name. */
export const MAX_WANT = 64

/** Largest request accepted, in bytes. */
export const MAX_REQUEST_BYTES = 8192

/** Extra bytes a reply may take per block besides the block's own bytes (CID and framing). */
export const REPLY_OVERHEAD_PER_BLOCK = 96

/** Most peers one reply may refer the asker to. */
export const MAX_REFERRALS = 8

/** Most addresses per referred peer. */
export const MAX_REFERRAL_ADDRS = 4

/** Longest address of a referred peer, in bytes; longer ones are left out. */
export const MAX_REFERRAL_ADDR_BYTES = 96

/** Bytes a reply's referrals may add (what an asker allows for them besides the blocks). */
export const MAX_REFERRALS_BYTES = MAX_REFERRALS * (64 + MAX_REFERRAL_ADDRS * (MAX_REFERRAL_ADDR_BYTES + 4))

/** A peer a reply refers the asker to: one the replying peer recently served blocks to. */
export interface Referral {
  id: PeerId
  addrs: Multiaddr[]
}

/** A decoded request. */
export interface BlockRequest {
  /** blocks asked for */
  want: CID[]
  /** bundle roots the asker wants to know whether the peer holds completely */
  holds: CID[]
}

/** A decoded reply. */
export interface BlockReply {
  /** the blocks the peer sent */
  blocks: Array<{ cid: CID, data: Uint8Array }>
  /** the peer is serving as many requests as it allows */
  busy?: boolean
  /** likely holders to ask instead */
  peers?: Referral[]
  /** the bundles asked about in `holds` that the peer holds completely */
  held?: CID[]
}

/** Encodes a request for these blocks and, optionally, whether these bundles are held. */
export function encodeRequest (want: CID[], holds: CID[] = []): Uint8Array {
  return dagCbor.encode(holds.length > 0 ? { want, holds } : { want })
}

function cidList (value: unknown, what: string): CID[] {
  if (!Array.isArray(value) || value.length > MAX_WANT) {
    throw new InvalidBundleError(`malformed block ${what}`)
  }
  return value.map(c => {
    const cid = CID.asCID(c)
    if (cid == null) {
      throw new InvalidBundleError(`malformed block ${what}`)
    }
    return cid
  })
}

/** Decodes a request; throws `InvalidBundleError` when malformed. */
export function decodeRequest (bytes: Uint8Array): BlockRequest {
  let value: { want?: unknown, holds?: unknown } | null
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new InvalidBundleError(`malformed block request: ${(err as Error).message}`)
  }
  if (value == null || typeof value !== 'object') {
    throw new InvalidBundleError('malformed block request')
  }
  return { want: cidList(value.want, 'request'), holds: value.holds == null ? [] : cidList(value.holds, 'request: holds') }
}

/** Encodes a reply. */
export function encodeReply (reply: BlockReply): Uint8Array {
  const wire: Record<string, unknown> = { blocks: reply.blocks }
  if (reply.busy === true) wire.busy = true
  if (reply.held != null && reply.held.length > 0) wire.held = reply.held
  if (reply.peers != null && reply.peers.length > 0) {
    wire.peers = reply.peers.slice(0, MAX_REFERRALS).map(p => ({
      id: p.id.toMultihash().bytes,
      addrs: p.addrs.map(a => a.bytes).filter(b => b.byteLength <= MAX_REFERRAL_ADDR_BYTES).slice(0, MAX_REFERRAL_ADDRS)
    }))
  }
  return dagCbor.encode(wire)
}

function decodeReferral (value: unknown): Referral {
  const r = value as { id?: unknown, addrs?: unknown } | null
  if (r == null || typeof r !== 'object' || !(r.id instanceof Uint8Array) || r.id.byteLength > 64 || !Array.isArray(r.addrs) || r.addrs.length > MAX_REFERRAL_ADDRS) {
    throw new InvalidBundleError('malformed block reply: a referred peer')
  }
  try {
    return { id: peerIdFromMultihash(Digest.decode(r.id)), addrs: r.addrs.map(a => { if (!(a instanceof Uint8Array)) throw new Error('not bytes'); return multiaddr(a) }) }
  } catch (err) {
    throw new InvalidBundleError(`malformed block reply: a referred peer (${(err as Error).message})`)
  }
}

/** Decodes a reply; throws `InvalidBundleError` when malformed. */
export function decodeReply (bytes: Uint8Array): BlockReply {
  let value: { blocks?: unknown, busy?: unknown, peers?: unknown, held?: unknown }
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new InvalidBundleError(`malformed block reply: ${(err as Error).message}`)
  }
  if (value == null || !Array.isArray(value.blocks)) {
    throw new InvalidBundleError('malformed block reply')
  }
  if (value.peers != null && (!Array.isArray(value.peers) || value.peers.length > MAX_REFERRALS)) {
    throw new InvalidBundleError('malformed block reply: peers')
  }
  const blocks = value.blocks.map((b: { cid?: unknown, data?: unknown } | null) => {
    const cid = CID.asCID(b?.cid)
    if (cid == null || !(b?.data instanceof Uint8Array)) {
      throw new InvalidBundleError('malformed block reply')
    }
    return { cid, data: b.data }
  })
  const reply: BlockReply = { blocks }
  if (value.busy === true) reply.busy = true
  if (Array.isArray(value.peers) && value.peers.length > 0) reply.peers = value.peers.map(decodeReferral)
  if (value.held != null) {
    const held = cidList(value.held, 'reply: held')
    if (held.length > 0) reply.held = held
  }
  return reply
}
