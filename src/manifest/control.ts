/**
 * Control messages (decision 10): pause, resume, abort, retire (raise the minimum supported
 * version) and allow (the nodes authorised to upgrade). Each is signed by the release keys like a
 * manifest — detached ed25519 signatures over `molt/control/v1` ‖ body CID, distinct keys counted
 * — carries a system-wide sequence number and the manifest version it concerns (its scope), and
 * is stored in a gapless log that is caught up exactly like the manifest chain. A replayed older
 * message changes nothing: the log only grows at `highest + 1`.
 */
import * as cbor from '@ipld/dag-cbor'
import { logger } from '@libp2p/logger'
import { Key, type Datastore } from 'interface-datastore'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'uint8arrays/equals'
import { ManifestDecodeError, ManifestTooLargeError, NonCanonicalEncodingError, WrongSystemError } from './errors.ts'
import { decodeStrict } from './codec.ts'
import { verifySignatures, signBody } from './policy.ts'
import type { ManifestSignature, TrustPolicy } from './types.ts'
import type { PrivateKey } from '@libp2p/interface'

const log = logger('molt:manifest:control')

/** The domain every control-message signature is made in. */
export const CONTROL_SIGNING_DOMAIN = 'molt/control/v1'

/** Largest encoded control message accepted, in bytes. */
export const MAX_CONTROL_BYTES = 16 * 1024

/** Most peers one allow-list may name. */
export const MAX_ALLOW_LIST = 256

/**
 * What a control message asks of the fleet.
 *
 * - `pause`: nodes not yet upgraded to the scope's version wait; `resume` lifts it.
 * - `abort`: nodes not yet upgraded to the scope's version never will (upgraded ones keep
 *   running); final for that scope.
 * - `retire`: calls below `minimumVersion` fail `VersionRetired`, and what serves them is
 *   discarded.
 * - `allow`: only these peers (ids) may upgrade to the scope's version; an empty list lifts the
 *   restriction.
 */
export type ControlAction =
  | { type: 'pause' }
  | { type: 'resume' }
  | { type: 'abort' }
  | { type: 'retire', minimumVersion: number }
  | { type: 'allow', peers: string[] }

/**
 * The signed part of a control message; its CID is its identity.
 */
export interface ControlBody {
  system: string
  /** system-wide sequence number, 1, 2, 3, ... */
  seq: number
  /** the manifest version it concerns */
  scope: number
  action: ControlAction
  /** milliseconds since the epoch, informational */
  createdAt: number
}

/**
 * A control message with its canonical bytes, CID and signatures.
 */
export interface SignedControl {
  body: ControlBody
  bodyBytes: Uint8Array
  cid: CID
  signatures: ManifestSignature[]
}

function fail (what: string, why: string): never {
  throw new ManifestDecodeError(`${what}: ${why}`)
}

function count (value: unknown, what: string, min = 0): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    fail(what, `not a safe integer ≥ ${min}`)
  }
  return value
}

function map (value: unknown, keys: string[], what: string): Record<string, unknown> {
  if (value == null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array || CID.asCID(value) != null) {
    fail(what, 'not a map')
  }
  const have = Object.keys(value).sort().join(',')
  if (have !== [...keys].sort().join(',')) {
    fail(what, `expected fields ${keys.join(', ')}, got ${have}`)
  }
  return value as Record<string, unknown>
}

function action (value: unknown): ControlAction {
  const type = (value as { type?: unknown } | null)?.type
  switch (type) {
    case 'pause':
    case 'resume':
    case 'abort':
      map(value, ['type'], 'control.action')
      return { type }
    case 'retire': {
      const v = map(value, ['type', 'minimumVersion'], 'control.action')
      return { type, minimumVersion: count(v.minimumVersion, 'control.action.minimumVersion') }
    }
    case 'allow': {
      const v = map(value, ['type', 'peers'], 'control.action')
      if (!Array.isArray(v.peers) || v.peers.length > MAX_ALLOW_LIST || v.peers.some(p => typeof p !== 'string' || p.length === 0 || p.length > 128)) {
        fail('control.action.peers', `not a list of at most ${MAX_ALLOW_LIST} peer ids`)
      }
      return { type, peers: [...v.peers as string[]] }
    }
    default:
      fail('control.action.type', 'not pause, resume, abort, retire or allow')
  }
}

/**
 * Checks a control body's shape and ranges, throwing `ManifestDecodeError`.
 */
export function validateControlBody (value: unknown): ControlBody {
  const v = map(value, ['system', 'seq', 'scope', 'action', 'createdAt'], 'control')
  if (typeof v.system !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(v.system)) {
    fail('control.system', 'not a system name')
  }
  return {
    system: v.system,
    seq: count(v.seq, 'control.seq', 1),
    scope: count(v.scope, 'control.scope'),
    action: action(v.action),
    createdAt: count(v.createdAt, 'control.createdAt')
  }
}

/**
 * Makes an unsigned control message.
 */
export async function createControl (body: ControlBody): Promise<SignedControl> {
  const bodyBytes = cbor.encode(validateControlBody(body))
  return { body: validateControlBody(cbor.decode(bodyBytes)), bodyBytes, cid: CID.createV1(cbor.code, await sha256.digest(bodyBytes)), signatures: [] }
}

/**
 * Adds this key's signature to a control message.
 */
export async function signControl (control: SignedControl, key: PrivateKey): Promise<SignedControl> {
  return { ...control, signatures: await signBody(CONTROL_SIGNING_DOMAIN, control.cid, control.signatures, key) }
}

/**
 * Verifies a control message under the trust policy in force: every signature valid and from a
 * known key, the release threshold met by distinct keys.
 */
export async function verifyControl (control: SignedControl, policy: TrustPolicy): Promise<void> {
  await verifySignatures(CONTROL_SIGNING_DOMAIN, control.cid, control.signatures, policy, `control ${control.body.seq}`)
}

/**
 * Encodes a signed control message.
 */
export function encodeSignedControl (control: SignedControl): Uint8Array {
  return cbor.encode({ b: control.bodyBytes, s: control.signatures.map(s => ({ k: s.publicKey, s: s.signature })) })
}

/**
 * Decodes a signed control message, refusing oversize, malformed and non-canonical input.
 */
export async function decodeSignedControl (data: Uint8Array): Promise<SignedControl> {
  if (!(data instanceof Uint8Array)) {
    fail('control', 'not bytes')
  }
  if (data.byteLength > MAX_CONTROL_BYTES) {
    throw new ManifestTooLargeError(`control: ${data.byteLength} bytes exceeds the limit of ${MAX_CONTROL_BYTES}`)
  }
  let outer: unknown
  try {
    outer = cbor.decode(data)
  } catch (err) {
    fail('control', `not dag-cbor (${(err as Error).message})`)
  }
  const v = map(outer, ['b', 's'], 'control')
  if (!(v.b instanceof Uint8Array) || !Array.isArray(v.s) || v.s.length > 64) {
    fail('control', 'malformed')
  }
  const bodyBytes = v.b
  const body = validateControlBody(decodeStrict(bodyBytes, 'control.b'))
  if (!equals(cbor.encode(body), bodyBytes)) {
    throw new NonCanonicalEncodingError('control: not the canonical dag-cbor encoding')
  }
  const signatures = v.s.map((s, i) => {
    const sig = map(s, ['k', 's'], `control.s[${i}]`)
    if (!(sig.k instanceof Uint8Array) || !(sig.s instanceof Uint8Array) || sig.k.length > 128 || sig.s.length > 128) {
      fail(`control.s[${i}]`, 'malformed')
    }
    return { publicKey: sig.k, signature: sig.s }
  })
  return { body, bodyBytes, cid: CID.createV1(cbor.code, await sha256.digest(bodyBytes)), signatures }
}

/**
 * How the log took a control message that was not invalid (invalid ones throw).
 */
export type ControlVerdict =
  | { kind: 'accepted' }
  | { kind: 'old' }
  | { kind: 'conflict' }
  | { kind: 'ahead', seq: number }

/**
 * The rollout control every node derives from the log: the same messages in the same order give
 * the same state on every node.
 */
export interface RolloutControl {
  /** highest applied sequence number */
  seq: number
  /** manifest versions whose rollout is paused */
  paused: number[]
  /** manifest versions whose rollout was aborted (final) */
  aborted: number[]
  /** calls below it fail `VersionRetired` */
  minimumVersion: number
  /** per manifest version, the peers allowed to upgrade to it (absent: everyone) */
  allow: Record<number, string[]>
}

/**
 * A node's log of control messages.
 */
export interface ControlLog {
  /** the state the applied messages give */
  state(): RolloutControl
  /** the message at a sequence number */
  get(seq: number): SignedControl | undefined
  /** verifies and applies the next message */
  consider(control: SignedControl, policy: TrustPolicy): Promise<ControlVerdict>
}

function fold (state: RolloutControl, control: ControlBody): RolloutControl {
  const next: RolloutControl = { ...state, seq: control.seq, allow: { ...state.allow } }
  const scope = control.scope
  switch (control.action.type) {
    case 'pause':
      next.paused = [...new Set([...state.paused, scope])].sort((a, b) => a - b)
      break
    case 'resume':
      next.paused = state.paused.filter(v => v !== scope)
      break
    case 'abort':
      next.aborted = [...new Set([...state.aborted, scope])].sort((a, b) => a - b)
      next.paused = state.paused.filter(v => v !== scope)
      break
    case 'retire':
      // the minimum only ever rises
      next.minimumVersion = Math.max(state.minimumVersion, control.action.minimumVersion)
      break
    case 'allow':
      if (control.action.peers.length === 0) {
        delete next.allow[scope]
      } else {
        next.allow[scope] = [...control.action.peers]
      }
      break
  }
  return next
}

class Log implements ControlLog {
  private readonly messages = new Map<number, SignedControl>()
  private current: RolloutControl = { seq: 0, paused: [], aborted: [], minimumVersion: 0, allow: {} }
  private queue: Promise<unknown> = Promise.resolve()

  private readonly datastore: Datastore
  private readonly system: string

  constructor (datastore: Datastore, system: string) {
    this.datastore = datastore
    this.system = system
  }

  async load (): Promise<void> {
    const stored: SignedControl[] = []
    for await (const { value } of this.datastore.query({ prefix: '/c/' })) {
      stored.push(await decodeSignedControl(value))
    }
    stored.sort((a, b) => a.body.seq - b.body.seq)
    for (const c of stored) {
      if (c.body.seq !== this.current.seq + 1) {
        log.error('control log has a gap at %d; ignoring what follows', this.current.seq + 1)
        break
      }
      this.messages.set(c.body.seq, c)
      this.current = fold(this.current, c.body)
    }
  }

  state (): RolloutControl {
    return { ...this.current, paused: [...this.current.paused], aborted: [...this.current.aborted], allow: { ...this.current.allow } }
  }

  get (seq: number): SignedControl | undefined {
    return this.messages.get(seq)
  }

  async consider (control: SignedControl, policy: TrustPolicy): Promise<ControlVerdict> {
    const run = this.queue.then(async () => await this.considerNow(control, policy))
    this.queue = run.catch(() => {})
    return await run
  }

  private async considerNow (control: SignedControl, policy: TrustPolicy): Promise<ControlVerdict> {
    if (control.body.system !== this.system) {
      throw new WrongSystemError(`control message for system "${control.body.system}", this node runs "${this.system}"`)
    }
    await verifyControl(control, policy)
    const { seq } = control.body
    if (seq <= this.current.seq) {
      return this.messages.get(seq)?.cid.equals(control.cid) === true ? { kind: 'old' } : { kind: 'conflict' }
    }
    if (seq > this.current.seq + 1) {
      return { kind: 'ahead', seq }
    }
    await this.datastore.put(new Key(`/c/${seq.toString().padStart(16, '0')}`), encodeSignedControl(control))
    this.messages.set(seq, control)
    this.current = fold(this.current, control.body)
    return { kind: 'accepted' }
  }
}

/**
 * Opens a node's control log from its store.
 */
export async function openControlLog (init: { datastore: Datastore, system: string }): Promise<ControlLog> {
  const l = new Log(init.datastore, init.system)
  await l.load()
  return l
}
