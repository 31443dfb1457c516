/**
 * The block-exchange protocol, `/molt/<system>/bundle/1.0.0`: one request, one reply per stream
 * (over the overlay's `handleRequests` / `sendRequest`).
 *
 * - request (dag-cbor): `{ want: CID[] }`, at most {@link MAX_WANT} CIDs
 * - reply (dag-cbor): `{ blocks: [{ cid, data }], busy? }`: the wanted blocks the peer holds
 *   (any subset, so partial holders answer with what they have); `busy` when the peer is already
 *   serving as many requests as it allows, so the asker tries someone else
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { InvalidBundleError } from './errors.ts'

/** Most CIDs one request may name. */
export const MAX_WANT = 64

/** Largest request accepted, in bytes. */
export const MAX_REQUEST_BYTES = 8192

/** Extra bytes a reply may take per block besides the block's own bytes (CID and framing). */
export const REPLY_OVERHEAD_PER_BLOCK = 96

/** A decoded reply. */
export interface BlockReply {
  /** the blocks the peer sent */
  blocks: Array<{ cid: CID, data: Uint8Array }>
  /** the peer is serving as many requests as it allows */
  busy?: boolean
}

/** Encodes a request for these blocks. */
export function encodeRequest (want: CID[]): Uint8Array {
  return dagCbor.encode({ want })
}

/** Decodes a request; throws `InvalidBundleError` when malformed. */
export function decodeRequest (bytes: Uint8Array): CID[] {
  const value = dagCbor.decode<{ want?: unknown }>(bytes)
  if (value == null || !Array.isArray(value.want) || value.want.length > MAX_WANT) {
    throw new InvalidBundleError('malformed block request')
  }
  return value.want.map(c => {
    const cid = CID.asCID(c)
    if (cid == null) {
      throw new InvalidBundleError('malformed block request')
    }
    return cid
  })
}

/** Encodes a reply. */
export function encodeReply (reply: BlockReply): Uint8Array {
  return dagCbor.encode(reply.busy === true ? { blocks: reply.blocks, busy: true } : { blocks: reply.blocks })
}

/** Decodes a reply; throws `InvalidBundleError` when malformed. */
export function decodeReply (bytes: Uint8Array): BlockReply {
  const value = dagCbor.decode<{ blocks?: unknown, busy?: unknown }>(bytes)
  if (value == null || !Array.isArray(value.blocks)) {
    throw new InvalidBundleError('malformed block reply')
  }
  const blocks = value.blocks.map((b: { cid?: unknown, data?: unknown } | null) => {
    const cid = CID.asCID(b?.cid)
    if (cid == null || !(b?.data instanceof Uint8Array)) {
      throw new InvalidBundleError('malformed block reply')
    }
    return { cid, data: b.data }
  })
  return value.busy === true ? { blocks, busy: true } : { blocks }
}
