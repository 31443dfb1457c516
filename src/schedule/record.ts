/**
 * Status records on the wire (decision 10): a canonical dag-cbor body signed by the peer it names,
 * with its libp2p key, in its own domain (`molt/status/v1` ‖ body bytes), so a status signature can
 * never pass for a manifest signature or the reverse.
 *
 * The decoder checks the size first, then the exact shape and ranges, then that re-encoding gives
 * the same bytes, then the signature: anything else is refused with a typed error.
 */
import * as cbor from '@ipld/dag-cbor'
import { peerIdFromString } from '@libp2p/peer-id'
import { CID } from 'multiformats/cid'
import { concat } from 'uint8arrays/concat'
import { equals } from 'uint8arrays/equals'
import { fromString } from 'uint8arrays/from-string'
import { BadStatusSignatureError, StatusDecodeError, StatusTooLargeError, WrongStatusSystemError } from './errors.ts'
import { PHASES, type Phase, type StatusRecord } from './types.ts'
import type { PrivateKey } from '@libp2p/interface'

/** The domain every status signature is made in. */
export const STATUS_SIGNING_DOMAIN = 'molt/status/v1'

/** Largest encoded signed status record accepted, in bytes. */
export const MAX_STATUS_BYTES = 1024

/** Most app tags one record may carry. */
export const MAX_STATUS_TAGS = 8

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/
const TAG_KEY = /^[A-Za-z0-9_.-]{1,32}$/
const MAX_TAG_VALUE = 64
const MAX_PEER_ID = 128

/**
 * A status record as it travels: the signed body's bytes, the record they decode to, and the
 * signature.
 */
export interface SignedStatus {
  readonly record: StatusRecord
  readonly system: string
  readonly bodyBytes: Uint8Array
  readonly signature: Uint8Array
}

function fail (what: string, why: string): never {
  throw new StatusDecodeError(`${what}: ${why}`)
}

function isMap (value: unknown): value is Record<string, unknown> {
  return value != null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array) && CID.asCID(value) == null
}

function fields (value: unknown, required: string[], optional: string[], what: string): Record<string, unknown> {
  if (!isMap(value)) fail(what, 'not a map')
  for (const key of required) {
    if (!(key in value)) fail(what, `missing field "${key}"`)
  }
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) fail(what, `unknown field "${key}"`)
  }
  return value
}

function int (value: unknown, what: string, min = 0): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) fail(what, `not a safe integer ≥ ${min}`)
  return value
}

function peerString (value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_PEER_ID) fail(what, 'not a peer id')
  try {
    peerIdFromString(value)
  } catch {
    fail(what, 'not a peer id')
  }
  return value
}

/** The record as a plain map with short keys, ready for dag-cbor (no undefined fields). */
function plain (system: string, r: StatusRecord): Record<string, unknown> {
  const out: Record<string, unknown> = {
    s: system,
    p: r.peer,
    c: r.class,
    v: r.version,
    t: r.target,
    f: PHASES.indexOf(r.phase),
    h: r.healthy,
    g: { ...r.tags },
    q: r.seq,
    a: r.at
  }
  if (r.defer != null) out.d = { p: r.defer.peer, q: r.defer.seq }
  return out
}

/**
 * Checks a decoded body's shape and ranges, throwing `StatusDecodeError`; returns the system and
 * a clean record.
 */
export function validateStatusBody (value: unknown): { system: string, record: StatusRecord } {
  const v = fields(value, ['s', 'p', 'c', 'v', 't', 'f', 'h', 'g', 'q', 'a'], ['d'], 'status')
  if (typeof v.s !== 'string' || !NAME.test(v.s)) fail('status.s', 'not a system name')
  if (typeof v.c !== 'string' || !NAME.test(v.c)) fail('status.c', 'not a class name')
  const phase = PHASES[int(v.f, 'status.f')]
  if (phase == null) fail('status.f', 'not a phase')
  if (typeof v.h !== 'boolean') fail('status.h', 'not a boolean')
  if (!isMap(v.g)) fail('status.g', 'not a map')
  const entries = Object.entries(v.g)
  if (entries.length > MAX_STATUS_TAGS) fail('status.g', `more than ${MAX_STATUS_TAGS} tags`)
  const tags: Record<string, string> = {}
  for (const [k, t] of entries) {
    if (!TAG_KEY.test(k)) fail('status.g', 'bad tag name')
    if (typeof t !== 'string' || t.length > MAX_TAG_VALUE) fail(`status.g.${k}`, `not a string of at most ${MAX_TAG_VALUE} characters`)
    tags[k] = t
  }
  const version = int(v.v, 'status.v')
  const target = int(v.t, 'status.t')
  if (target < version) fail('status.t', 'below the version')
  const record: { -readonly [K in keyof StatusRecord]: StatusRecord[K] } = {
    peer: peerString(v.p, 'status.p'),
    class: v.c,
    version,
    target,
    phase: phase as Phase,
    healthy: v.h,
    tags,
    seq: int(v.q, 'status.q', 1),
    at: int(v.a, 'status.a')
  }
  if (v.d !== undefined) {
    const d = fields(v.d, ['p', 'q'], [], 'status.d')
    record.defer = { peer: peerString(d.p, 'status.d.p'), seq: int(d.q, 'status.d.q', 1) }
  }
  return { system: v.s, record }
}

function signingMessage (bodyBytes: Uint8Array): Uint8Array {
  return concat([fromString(STATUS_SIGNING_DOMAIN), bodyBytes])
}

/**
 * Makes and signs a status record with the peer's own key. The record must name that key's peer.
 */
export async function signStatus (system: string, record: StatusRecord, privateKey: PrivateKey): Promise<SignedStatus> {
  const bodyBytes = cbor.encode(plain(system, record))
  const checked = validateStatusBody(cbor.decode(bodyBytes))
  const peer = peerIdFromString(checked.record.peer)
  if (peer.publicKey == null || !equals(peer.publicKey.raw, privateKey.publicKey.raw)) {
    throw new BadStatusSignatureError('a status record must be signed by the key of the peer it names')
  }
  const signature = await privateKey.sign(signingMessage(bodyBytes))
  return { record: checked.record, system: checked.system, bodyBytes, signature }
}

/** Encodes a signed status record for the wire. */
export function encodeSignedStatus (status: SignedStatus): Uint8Array {
  return cbor.encode({ b: status.bodyBytes, s: status.signature })
}

/**
 * Decodes and verifies a signed status record of at most `maxBytes`: strict shape, canonical body,
 * the system, and a signature by the key of the peer the record names. When `from` is given, the
 * record must also name that peer (a peer only speaks for itself).
 */
export async function decodeSignedStatus (data: Uint8Array, system: string, options: { maxBytes?: number, from?: string } = {}): Promise<SignedStatus> {
  const maxBytes = options.maxBytes ?? MAX_STATUS_BYTES
  if (!(data instanceof Uint8Array)) throw new StatusDecodeError('status: not bytes')
  if (data.byteLength > maxBytes) throw new StatusTooLargeError(`status: ${data.byteLength} bytes exceeds the limit of ${maxBytes}`)
  let value: unknown
  try {
    value = cbor.decode(data)
  } catch (err) {
    throw new StatusDecodeError(`status: not dag-cbor (${(err as Error).message})`)
  }
  const v = fields(value, ['b', 's'], [], 'signed status')
  if (!(v.b instanceof Uint8Array) || v.b.byteLength === 0) fail('signed status.b', 'not bytes')
  if (!(v.s instanceof Uint8Array) || v.s.byteLength === 0 || v.s.byteLength > 128) fail('signed status.s', 'not a signature')
  const bodyBytes = v.b
  let body: unknown
  try {
    body = cbor.decode(bodyBytes)
  } catch (err) {
    throw new StatusDecodeError(`status body: not canonical dag-cbor (${(err as Error).message})`)
  }
  const checked = validateStatusBody(body)
  if (!equals(cbor.encode(plain(checked.system, checked.record)), bodyBytes)) {
    throw new StatusDecodeError('status body: not the canonical dag-cbor encoding')
  }
  if (checked.system !== system) {
    throw new WrongStatusSystemError(`status: for system "${checked.system}", not "${system}"`)
  }
  if (options.from != null && options.from !== checked.record.peer) {
    throw new BadStatusSignatureError(`status: names peer ${checked.record.peer} but came from ${options.from}`)
  }
  const publicKey = peerIdFromString(checked.record.peer).publicKey
  if (publicKey == null) {
    throw new BadStatusSignatureError(`status: peer ${checked.record.peer} has no inline public key to verify with`)
  }
  let ok = false
  try {
    ok = await publicKey.verify(signingMessage(bodyBytes), v.s)
  } catch {
    ok = false
  }
  if (!ok) {
    throw new BadStatusSignatureError(`status: the signature of peer ${checked.record.peer}'s record #${checked.record.seq} does not verify`)
  }
  return { record: checked.record, system: checked.system, bodyBytes, signature: v.s }
}
