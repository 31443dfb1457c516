/**
 * The canonical codec of manifests. A body is canonical dag-cbor; its CID (CIDv1, dag-cbor,
 * sha256) is the manifest's identity. A signed manifest travels as `{ b: body bytes, s: [{ k, s }] }`
 * so the body's exact bytes, and with them its CID, survive any relay.
 *
 * Every decoder checks the size first, then the exact shape and value ranges, then that
 * re-encoding gives the same bytes: anything else is refused with a typed error.
 */
import * as cbor from '@ipld/dag-cbor'
import { decode as cborgDecode } from 'cborg'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'uint8arrays/equals'
import { ManifestDecodeError, ManifestTooLargeError, NonCanonicalEncodingError } from './errors.ts'
import type { ClassUpgrade, KeyRole, ManifestBody, ManifestSignature, ScheduleSpec, SignedManifest, TrustPolicy } from './types.ts'

/**
 * Largest encoded signed manifest accepted, in bytes.
 */
export const MAX_MANIFEST_BYTES = 64 * 1024

/** Most class upgrades one manifest may carry. */
export const MAX_CLASS_UPGRADES = 256

/** Most signatures one manifest may carry. */
export const MAX_SIGNATURES = 64

/** Most keys one role may list. */
export const MAX_ROLE_KEYS = 64

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/
const PARAM_KEY = /^[A-Za-z0-9_.-]{1,64}$/

function fail (what: string, why: string): never {
  throw new ManifestDecodeError(`${what}: ${why}`)
}

function isMap (value: unknown): value is Record<string, unknown> {
  return value != null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array) && CID.asCID(value) == null
}

function fields (value: unknown, required: string[], optional: string[], what: string): Record<string, unknown> {
  if (!isMap(value)) {
    fail(what, 'not a map')
  }
  for (const key of required) {
    if (!(key in value)) {
      fail(what, `missing field "${key}"`)
    }
  }
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) {
      fail(what, `unknown field "${key}"`)
    }
  }
  return value
}

function count (value: unknown, what: string, min = 0): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    fail(what, `not a safe integer ≥ ${min}`)
  }
  return value
}

function name (value: unknown, what: string): string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    fail(what, 'not a name of 1-64 characters of a-z, 0-9, ".", "_" or "-"')
  }
  return value
}

function cidField (value: unknown, what: string): CID {
  const cid = CID.asCID(value)
  if (cid == null || cid.version !== 1) {
    fail(what, 'not a CIDv1')
  }
  return cid
}

function bytes (value: unknown, what: string, max: number): Uint8Array {
  if (!(value instanceof Uint8Array) || value.byteLength === 0 || value.byteLength > max) {
    fail(what, `not 1-${max} bytes`)
  }
  return value
}

function list (value: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(value) || value.length > max) {
    fail(what, `not a list of at most ${max}`)
  }
  return value
}

function role (value: unknown, what: string): KeyRole {
  const v = fields(value, ['keys', 'threshold'], [], what)
  const keys = list(v.keys, `${what}.keys`, MAX_ROLE_KEYS).map((k, i) => bytes(k, `${what}.keys[${i}]`, 128))
  const threshold = count(v.threshold, `${what}.threshold`, 1)
  return { keys, threshold }
}

function policy (value: unknown, what: string): TrustPolicy {
  const v = fields(value, ['root', 'release'], [], what)
  return { root: role(v.root, `${what}.root`), release: role(v.release, `${what}.release`) }
}

function schedule (value: unknown, what: string): ScheduleSpec {
  const v = fields(value, ['name'], ['params'], what)
  if (typeof v.name !== 'string' || v.name.length === 0 || v.name.length > 128) {
    fail(`${what}.name`, 'not a string of 1-128 characters')
  }
  const spec: ScheduleSpec = { name: v.name }
  if (v.params !== undefined) {
    if (!isMap(v.params)) {
      fail(`${what}.params`, 'not a map')
    }
    const params: Record<string, string | number | boolean | null> = {}
    const entries = Object.entries(v.params)
    if (entries.length > 64) {
      fail(`${what}.params`, 'more than 64 parameters')
    }
    for (const [key, param] of entries) {
      if (!PARAM_KEY.test(key)) {
        fail(`${what}.params`, `bad parameter name ${JSON.stringify(key.slice(0, 64))}`)
      }
      const ok = param === null || typeof param === 'boolean' ||
        (typeof param === 'number' && Number.isFinite(param)) ||
        (typeof param === 'string' && param.length <= 1024)
      if (!ok) {
        fail(`${what}.params.${key}`, 'not a string (≤ 1024), finite number, boolean or null')
      }
      params[key] = param as string | number | boolean | null
    }
    spec.params = params
  }
  return spec
}

function classUpgrade (value: unknown, what: string): ClassUpgrade {
  const v = fields(value, ['oldClass', 'newClass', 'bundle', 'bundleSize', 'schedule'], ['fromVersion'], what)
  const upgrade: ClassUpgrade = {
    oldClass: name(v.oldClass, `${what}.oldClass`),
    newClass: name(v.newClass, `${what}.newClass`),
    bundle: cidField(v.bundle, `${what}.bundle`),
    bundleSize: count(v.bundleSize, `${what}.bundleSize`),
    schedule: schedule(v.schedule, `${what}.schedule`)
  }
  if (v.fromVersion !== undefined) {
    upgrade.fromVersion = count(v.fromVersion, `${what}.fromVersion`)
  }
  return upgrade
}

/**
 * Checks a body's shape and value ranges, throwing `ManifestDecodeError`; returns a clean copy.
 */
export function validateBody (value: unknown): ManifestBody {
  const v = fields(value, ['system', 'version', 'previous', 'classUpgrades', 'createdAt'], ['policy'], 'body')
  const version = count(v.version, 'body.version')
  const previous = v.previous === null ? null : cidField(v.previous, 'body.previous')
  if ((version === 0) !== (previous === null)) {
    fail('body.previous', version === 0 ? 'must be null at version 0' : 'must name version N-1')
  }
  const upgrades = list(v.classUpgrades, 'body.classUpgrades', MAX_CLASS_UPGRADES).map((u, i) => classUpgrade(u, `body.classUpgrades[${i}]`))
  const olds = new Set<string>()
  for (const u of upgrades) {
    const key = `${u.oldClass}@${u.fromVersion ?? version - 1}`
    if (olds.has(key)) {
      fail('body.classUpgrades', `two class upgrades for class "${u.oldClass}" from one version`)
    }
    olds.add(key)
  }
  const body: ManifestBody = {
    system: name(v.system, 'body.system'),
    version,
    previous,
    classUpgrades: upgrades,
    createdAt: count(v.createdAt, 'body.createdAt')
  }
  if (v.policy !== undefined) {
    body.policy = policy(v.policy, 'body.policy')
  }
  return body
}

/** Drops undefined optional fields, which dag-cbor cannot encode. */
function plainBody (body: ManifestBody): Record<string, unknown> {
  const out: Record<string, unknown> = {
    system: body.system,
    version: body.version,
    previous: body.previous,
    classUpgrades: body.classUpgrades.map(u => {
      const up: Record<string, unknown> = {
        oldClass: u.oldClass,
        newClass: u.newClass,
        bundle: u.bundle,
        bundleSize: u.bundleSize,
        schedule: u.schedule.params === undefined ? { name: u.schedule.name } : { name: u.schedule.name, params: u.schedule.params }
      }
      if (u.fromVersion !== undefined) {
        up.fromVersion = u.fromVersion
      }
      return up
    }),
    createdAt: body.createdAt
  }
  if (body.policy !== undefined) {
    out.policy = { root: { ...body.policy.root }, release: { ...body.policy.release } }
  }
  return out
}

/**
 * The canonical bytes of a body. Validates it first, so nothing unencodable or out of range is
 * ever signed.
 */
export function encodeBody (body: ManifestBody): Uint8Array {
  return cbor.encode(plainBody(validateBody(plainBody(body))))
}

/**
 * The CID of canonical body bytes.
 */
export async function bodyCid (bodyBytes: Uint8Array): Promise<CID> {
  return CID.createV1(cbor.code, await sha256.digest(bodyBytes))
}

/**
 * Decodes dag-cbor strictly. Bytes that are valid CBOR but not canonical dag-cbor (an integer
 * in a longer form, say) fail `NonCanonicalEncodingError`; anything else `ManifestDecodeError`.
 * Map-key order is checked by the caller, by re-encoding what it validated.
 */
export function decodeStrict (bytes: Uint8Array, what: string): unknown {
  try {
    return cbor.decode(bytes)
  } catch (err) {
    try {
      cborgDecode(bytes, { ...cbor.decodeOptions, strict: false })
    } catch {
      throw new ManifestDecodeError(`${what}: not dag-cbor (${(err as Error).message})`)
    }
    throw new NonCanonicalEncodingError(`${what}: not the canonical dag-cbor encoding (${(err as Error).message})`)
  }
}

/**
 * Decodes canonical body bytes; refuses any encoding that does not re-encode to the same bytes.
 */
export function decodeBody (bodyBytes: Uint8Array): ManifestBody {
  const body = validateBody(decodeStrict(bodyBytes, 'body'))
  if (!equals(cbor.encode(plainBody(body)), bodyBytes)) {
    throw new NonCanonicalEncodingError('body: not the canonical dag-cbor encoding')
  }
  return body
}

/**
 * Makes an unsigned manifest from a body.
 */
export async function createManifest (body: ManifestBody): Promise<SignedManifest> {
  const bodyBytes = encodeBody(body)
  return { body: decodeBody(bodyBytes), bodyBytes, cid: await bodyCid(bodyBytes), signatures: [] }
}

/**
 * Encodes a signed manifest for the wire or the store.
 */
export function encodeSignedManifest (manifest: SignedManifest): Uint8Array {
  return cbor.encode({
    b: manifest.bodyBytes,
    s: manifest.signatures.map(s => ({ k: s.publicKey, s: s.signature }))
  })
}

/**
 * Decodes a signed manifest of at most `maxBytes`, checking shape and canonical form (not the
 * signatures: that needs the trust policy, see `verifyManifest`).
 */
export async function decodeSignedManifest (data: Uint8Array, maxBytes: number = MAX_MANIFEST_BYTES): Promise<SignedManifest> {
  if (!(data instanceof Uint8Array)) {
    throw new ManifestDecodeError('manifest: not bytes')
  }
  if (data.byteLength > maxBytes) {
    throw new ManifestTooLargeError(`manifest: ${data.byteLength} bytes exceeds the limit of ${maxBytes}`)
  }
  let value: unknown
  try {
    value = cbor.decode(data)
  } catch (err) {
    throw new ManifestDecodeError(`manifest: not dag-cbor (${(err as Error).message})`)
  }
  const v = fields(value, ['b', 's'], [], 'manifest')
  const bodyBytes = bytes(v.b, 'manifest.b', MAX_MANIFEST_BYTES)
  const signatures: ManifestSignature[] = list(v.s, 'manifest.s', MAX_SIGNATURES).map((s, i) => {
    const sig = fields(s, ['k', 's'], [], `manifest.s[${i}]`)
    return { publicKey: bytes(sig.k, `manifest.s[${i}].k`, 128), signature: bytes(sig.s, `manifest.s[${i}].s`, 128) }
  })
  const body = decodeBody(bodyBytes)
  return { body, bodyBytes, cid: await bodyCid(bodyBytes), signatures }
}
