/**
 * The identifier circle: 64-bit ids written as 16 lower-case hex digits, so that ids compare as
 * strings and travel as strings (dag-cbor has no bigint). A node's id is the hash of its peer id
 * and a key's id the hash of the key, with the same function at every Chord version: changing it
 * would move every key, which no simulation object can hide (HotOS'03 §2.2, CFS).
 */
import { sha256, toHex } from './sha256.ts'

/** Hex digits of an id. */
export const ID_HEX = 16
/** Bits of an id, hence fingers of a node. */
export const ID_BITS = 64

const RING = 1n << 64n
const ids = new Map<string, string>()
const bigs = new Map<string, bigint>()

/** The ring id of a string (a peer id or a key): the first 8 bytes of its SHA-256. */
export function ringId (text: string): string {
  let id = ids.get(text)
  if (id == null) {
    // bounded: clients hash every key they touch
    if (ids.size > 200_000) ids.clear()
    id = toHex(sha256(text).subarray(0, ID_HEX / 2))
    ids.set(text, id)
  }
  return id
}

function big (id: string): bigint {
  let b = bigs.get(id)
  if (b == null) {
    if (bigs.size > 200_000) bigs.clear()
    b = BigInt('0x' + id)
    bigs.set(id, b)
  }
  return b
}

/** x ∈ (a, b) on the circle; (a, a) is the whole circle but a. */
export function between (a: string, x: string, b: string): boolean {
  if (a < b) return a < x && x < b
  if (a > b) return x > a || x < b
  return x !== a
}

/** x ∈ (a, b] on the circle; (a, a] is the whole circle. */
export function inRange (a: string, x: string, b: string): boolean {
  if (a < b) return a < x && x <= b
  if (a > b) return x > a || x <= b
  return true
}

/** Clockwise distance from a to b. */
export function distance (a: string, b: string): bigint {
  return ((big(b) - big(a)) % RING + RING) % RING
}

/** id + 2^i on the circle: where finger i starts. */
export function fingerStart (id: string, i: number): string {
  return ((big(id) + (1n << BigInt(i))) % RING).toString(16).padStart(ID_HEX, '0')
}

/** A stamp `[t, writer]`: the client's clock in ms and its peer id. */
export type Stamp = [number, string]

/** Orders stamps by t, then writer: the total order last-writer-wins follows. */
export function compareStamps (at: number, aw: string, bt: number, bw: string): number {
  if (at !== bt) return at < bt ? -1 : 1
  return aw < bw ? -1 : aw > bw ? 1 : 0
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** Store keys are `/`-separated `[A-Za-z0-9._-]` segments: user keys travel as hex of their UTF-8. */
export function keyToSegment (key: string): string {
  return toHex(encoder.encode(key))
}

/** The user key of a store segment (undefined when it is not one). */
export function segmentToKey (segment: string): string | undefined {
  if (segment.length % 2 !== 0 || !/^[0-9a-f]*$/.test(segment)) return undefined
  const bytes = new Uint8Array(segment.length / 2)
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(segment.slice(i * 2, i * 2 + 2), 16)
  return decoder.decode(bytes)
}
