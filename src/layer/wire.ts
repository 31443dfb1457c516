/**
 * The wire forms of `/molt/<system>/rpc/2.0.0`: one dag-cbor request and one dag-cbor reply per
 * call, each the body of a request-session frame (`src/overlay/session.ts`). Every decoder checks the size first, then the exact shape, and
 * throws `RpcDecodeError` on anything else.
 *
 * ```
 * request  { v: callerVersion, c: callerClass, m: method, a: [args...], o?: object, d?: deadlineMs }
 * reply    { v: calleeVersion, c: calleeClass, ok: value }
 *        | { v: calleeVersion, c: calleeClass, e: { n: errorName, m: message, r?: appErrorName } }
 * ```
 */
import * as cbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { MessageTooLargeError } from '../overlay/errors.ts'
import { RpcDecodeError } from './errors.ts'

/** Longest class, method or object name, and longest error name, in characters. */
export const MAX_NAME_LENGTH = 128

/** Longest error message carried in a reply, in characters; longer ones are cut. */
export const MAX_ERROR_MESSAGE_LENGTH = 1024

/**
 * One call as it crosses the wire.
 */
export interface RpcRequest {
  /** the caller's system version (the call's label) */
  version: number
  /** the caller's class */
  class: string
  /** the method to call */
  method: string
  /** the arguments, dag-cbor values */
  args: unknown[]
  /** which of the node's objects (services) to call, when the app has several */
  object?: string
  /** how long the caller will wait for the reply, in milliseconds */
  deadlineMs?: number
}

/**
 * One reply as it crosses the wire: the callee's labels and a value or a typed error.
 */
export type RpcReply =
  | { version: number, class: string, ok: unknown }
  | { version: number, class: string, error: { name: string, message: string, remoteName?: string } }

function decodeMap (bytes: Uint8Array, maxBytes: number, what: string): Record<string, unknown> {
  if (bytes.byteLength > maxBytes) {
    throw new MessageTooLargeError(`${what}: ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`)
  }
  let value: unknown
  try {
    value = cbor.decode(bytes)
  } catch (err) {
    throw new RpcDecodeError(`${what}: not dag-cbor (${(err as Error).message})`)
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array || CID.asCID(value) != null) {
    throw new RpcDecodeError(`${what}: not a map`)
  }
  return value as Record<string, unknown>
}

function onlyKeys (value: Record<string, unknown>, required: string[], optional: string[], what: string): void {
  for (const key of required) {
    if (!(key in value)) {
      throw new RpcDecodeError(`${what}: missing field ${key}`)
    }
  }
  for (const key of Object.keys(value)) {
    if (!required.includes(key) && !optional.includes(key)) {
      throw new RpcDecodeError(`${what}: unexpected field ${key}`)
    }
  }
}

function versionField (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new RpcDecodeError(`${what}: not a non-negative safe integer`)
  }
  return value
}

function nameField (value: unknown, what: string, allowEmpty = false): string {
  if (typeof value !== 'string' || value.length > MAX_NAME_LENGTH || (!allowEmpty && value.length === 0)) {
    throw new RpcDecodeError(`${what}: not a string of ${allowEmpty ? 0 : 1}-${MAX_NAME_LENGTH} characters`)
  }
  return value
}

/**
 * Encodes a request. Throws `RpcDecodeError` when an argument is not a dag-cbor value
 * (`undefined`, a function, a class instance...).
 */
export function encodeRequest (request: RpcRequest): Uint8Array {
  const wire: Record<string, unknown> = { v: request.version, c: request.class, m: request.method, a: request.args }
  if (request.object != null) {
    wire.o = request.object
  }
  if (request.deadlineMs != null) {
    wire.d = request.deadlineMs
  }
  try {
    return cbor.encode(wire)
  } catch (err) {
    throw new RpcDecodeError(`request: arguments are not dag-cbor values (${(err as Error).message})`)
  }
}

/**
 * Decodes a request of at most `maxBytes`.
 */
export function decodeRequest (bytes: Uint8Array, maxBytes: number): RpcRequest {
  const value = decodeMap(bytes, maxBytes, 'request')
  onlyKeys(value, ['v', 'c', 'm', 'a'], ['o', 'd'], 'request')
  if (!Array.isArray(value.a)) {
    throw new RpcDecodeError('request.a: not an array')
  }
  const request: RpcRequest = {
    version: versionField(value.v, 'request.v'),
    class: nameField(value.c, 'request.c', true),
    method: nameField(value.m, 'request.m'),
    args: value.a
  }
  if ('o' in value) {
    request.object = nameField(value.o, 'request.o')
  }
  if ('d' in value) {
    const d = versionField(value.d, 'request.d')
    if (d === 0) {
      throw new RpcDecodeError('request.d: must be positive')
    }
    request.deadlineMs = d
  }
  return request
}

/**
 * Encodes a reply. Throws `RpcDecodeError` when the value is not a dag-cbor value.
 */
export function encodeReply (reply: RpcReply): Uint8Array {
  if ('error' in reply) {
    const e: Record<string, unknown> = {
      n: reply.error.name.slice(0, MAX_NAME_LENGTH),
      m: reply.error.message.slice(0, MAX_ERROR_MESSAGE_LENGTH)
    }
    if (reply.error.remoteName != null) {
      e.r = reply.error.remoteName.slice(0, MAX_NAME_LENGTH)
    }
    return cbor.encode({ v: reply.version, c: reply.class, e })
  }
  try {
    return cbor.encode({ v: reply.version, c: reply.class, ok: reply.ok === undefined ? null : reply.ok })
  } catch (err) {
    throw new RpcDecodeError(`reply: the value is not a dag-cbor value (${(err as Error).message})`)
  }
}

/**
 * Decodes a reply of at most `maxBytes`.
 */
export function decodeReply (bytes: Uint8Array, maxBytes: number): RpcReply {
  const value = decodeMap(bytes, maxBytes, 'reply')
  const version = versionField(value.v, 'reply.v')
  const klass = nameField(value.c, 'reply.c', true)
  if ('ok' in value) {
    onlyKeys(value, ['v', 'c', 'ok'], [], 'reply')
    return { version, class: klass, ok: value.ok }
  }
  onlyKeys(value, ['v', 'c', 'e'], [], 'reply')
  const e = value.e
  if (e == null || typeof e !== 'object' || Array.isArray(e) || e instanceof Uint8Array || CID.asCID(e) != null) {
    throw new RpcDecodeError('reply.e: not a map')
  }
  const err = e as Record<string, unknown>
  onlyKeys(err, ['n', 'm'], ['r'], 'reply.e')
  const message = err.m
  if (typeof message !== 'string' || message.length > MAX_ERROR_MESSAGE_LENGTH) {
    throw new RpcDecodeError(`reply.e.m: not a string of at most ${MAX_ERROR_MESSAGE_LENGTH} characters`)
  }
  const error: { name: string, message: string, remoteName?: string } = { name: nameField(err.n, 'reply.e.n'), message }
  if ('r' in err) {
    error.remoteName = nameField(err.r, 'reply.e.r')
  }
  return { version, class: klass, error }
}
