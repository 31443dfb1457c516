/**
 * The wire forms of manifest propagation: announce-topic messages, heads, and manifest pulls.
 * Every decoder checks the size first, then the exact shape, and throws `PropagationDecodeError`
 * on anything else.
 */
import * as cbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { ManifestError, ManifestTooLargeError } from './errors.ts'

/**
 * A peer sent bytes that are not a well-formed propagation message.
 */
export class PropagationDecodeError extends ManifestError {
  static override readonly name = 'PropagationDecodeError'
  override readonly name = 'PropagationDecodeError'
}

/**
 * A message on the announce topic: a signed manifest, or a proof that two bodies were signed at
 * one version.
 */
export type AnnounceMessage =
  | { type: 'manifest', manifest: Uint8Array }
  | { type: 'fork', a: Uint8Array, b: Uint8Array }
  | { type: 'control', control: Uint8Array }

/**
 * What a node tells a peer it has: its highest accepted manifest and its highest control-message
 * sequence number.
 */
export interface Head {
  /** version of the highest accepted manifest */
  version: number
  /** body CID of that manifest */
  cid: CID
  /** highest control-message sequence number this node has applied (0 when none) */
  control: number
}

/**
 * A request for consecutive manifests (by version) or control messages (by sequence number)
 * starting at `from`.
 */
export interface ManifestRequest {
  from: number
  limit: number
}

function decodeMap (bytes: Uint8Array, maxBytes: number, what: string): Record<string, unknown> {
  if (bytes.byteLength > maxBytes) {
    throw new ManifestTooLargeError(`${what}: ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`)
  }
  let value: unknown
  try {
    value = cbor.decode(bytes)
  } catch (err) {
    throw new PropagationDecodeError(`${what}: not dag-cbor (${(err as Error).message})`)
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array || CID.asCID(value) != null) {
    throw new PropagationDecodeError(`${what}: not a map`)
  }
  return value as Record<string, unknown>
}

function exactKeys (value: Record<string, unknown>, keys: string[], what: string): void {
  const have = Object.keys(value).sort()
  const want = [...keys].sort()
  if (have.length !== want.length || have.some((k, i) => k !== want[i])) {
    throw new PropagationDecodeError(`${what}: expected fields ${want.join(', ')}, got ${have.join(', ')}`)
  }
}

function bytesField (value: unknown, what: string): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new PropagationDecodeError(`${what}: not bytes`)
  }
  return value
}

function countField (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new PropagationDecodeError(`${what}: not a non-negative safe integer`)
  }
  return value
}

/**
 * Encodes an announce-topic message.
 */
export function encodeAnnounce (message: AnnounceMessage): Uint8Array {
  switch (message.type) {
    case 'manifest': return cbor.encode({ t: 'manifest', m: message.manifest })
    case 'fork': return cbor.encode({ t: 'fork', a: message.a, b: message.b })
    case 'control': return cbor.encode({ t: 'control', c: message.control })
  }
}

/**
 * Decodes an announce-topic message of at most `maxBytes`.
 */
export function decodeAnnounce (bytes: Uint8Array, maxBytes: number): AnnounceMessage {
  const value = decodeMap(bytes, maxBytes, 'announce')
  if (value.t === 'manifest') {
    exactKeys(value, ['t', 'm'], 'announce')
    return { type: 'manifest', manifest: bytesField(value.m, 'announce.m') }
  }
  if (value.t === 'fork') {
    exactKeys(value, ['t', 'a', 'b'], 'announce')
    return { type: 'fork', a: bytesField(value.a, 'announce.a'), b: bytesField(value.b, 'announce.b') }
  }
  if (value.t === 'control') {
    exactKeys(value, ['t', 'c'], 'announce')
    return { type: 'control', control: bytesField(value.c, 'announce.c') }
  }
  throw new PropagationDecodeError('announce: unknown message type')
}

/** Heads are tiny; anything larger is not one. */
export const MAX_HEAD_BYTES = 256

/**
 * Encodes a head.
 */
export function encodeHead (head: Head): Uint8Array {
  return cbor.encode({ v: head.version, c: head.cid, s: head.control })
}

/**
 * Decodes a head.
 */
export function decodeHead (bytes: Uint8Array): Head {
  const value = decodeMap(bytes, MAX_HEAD_BYTES, 'head')
  exactKeys(value, ['v', 'c', 's'], 'head')
  const cid = CID.asCID(value.c)
  if (cid == null) {
    throw new PropagationDecodeError('head.c: not a CID')
  }
  return { version: countField(value.v, 'head.v'), cid, control: countField(value.s, 'head.s') }
}

/**
 * Encodes a manifest pull request.
 */
export function encodeManifestRequest (request: ManifestRequest): Uint8Array {
  return cbor.encode({ from: request.from, limit: request.limit })
}

/**
 * Decodes a manifest pull request; `limit` is clamped by the caller.
 */
export function decodeManifestRequest (bytes: Uint8Array): ManifestRequest {
  const value = decodeMap(bytes, 64, 'manifest request')
  exactKeys(value, ['from', 'limit'], 'manifest request')
  return { from: countField(value.from, 'request.from'), limit: countField(value.limit, 'request.limit') }
}

/**
 * Encodes a pull reply: encoded signed manifests or control messages, consecutive from the
 * requested one.
 */
export function encodeManifestReply (manifests: Uint8Array[]): Uint8Array {
  return cbor.encode({ manifests })
}

/**
 * Decodes a manifest pull reply holding at most `maxCount` manifests.
 */
export function decodeManifestReply (bytes: Uint8Array, maxBytes: number, maxCount: number): Uint8Array[] {
  const value = decodeMap(bytes, maxBytes, 'manifest reply')
  exactKeys(value, ['manifests'], 'manifest reply')
  if (!Array.isArray(value.manifests) || value.manifests.length > maxCount) {
    throw new PropagationDecodeError(`manifest reply: expected a list of at most ${maxCount} manifests`)
  }
  return value.manifests.map((m, i) => bytesField(m, `manifest reply[${i}]`))
}
