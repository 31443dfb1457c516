/**
 * Checks of what arrives on the wire: a peer (or an old caller through an SO) may send anything,
 * and a malformed argument must fail its call, not corrupt a store.
 */
import { ID_HEX } from './ring.ts'
import { named, type Value } from './types.ts'

/** A malformed argument: fails the call as `BadRequestError`. */
export function bad (what: string): Error {
  return named('BadRequestError', what)
}

/** A non-empty string of at most 4096 characters. */
export function str (v: Value | undefined, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw bad(`${what}: expected a non-empty string`)
  return v
}

/** A ring id: 16 lower-case hex digits. */
export function id (v: Value | undefined, what: string): string {
  if (typeof v !== 'string' || v.length !== ID_HEX || !/^[0-9a-f]+$/.test(v)) throw bad(`${what}: expected a ${ID_HEX}-digit hex id`)
  return v
}

/** An anti-entropy bucket suffix: up to 16 hex digits. */
export function suffix (v: Value | undefined): string {
  if (typeof v !== 'string' || v.length > ID_HEX || !/^[0-9a-f]*$/.test(v)) throw bad('suffix: expected hex digits')
  return v
}

/** A list of at most `max` strings (absent: empty). */
export function strs (v: Value | undefined, what: string, max = 64): string[] {
  if (v == null) return []
  if (!Array.isArray(v) || v.length > max) throw bad(`${what}: expected a list of at most ${max} strings`)
  return v.map(x => str(x, what))
}

/** A string, or null when absent. */
export function optStr (v: Value | undefined, what: string): string | null {
  return v == null ? null : str(v, what)
}

/** A finite number. */
export function num (v: Value | undefined, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${what}: expected a number`)
  return v
}

/** Exactly `n` finite numbers. */
export function nums (v: Value | undefined, n: number, what: string): number[] {
  if (!Array.isArray(v) || v.length !== n) throw bad(`${what}: expected ${n} numbers`)
  return v.map(x => num(x, what))
}

/** A list of anything. */
export function list (v: Value | undefined, what: string): Value[] {
  if (!Array.isArray(v)) throw bad(`${what}: expected a list`)
  return v
}

/** A map (not a list, not bytes). */
export function map (v: Value | undefined, what: string): { [key: string]: Value } {
  if (v == null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) throw bad(`${what}: expected a map`)
  return v as { [key: string]: Value }
}

/** A stamp `[t, writer]`. */
export function stamp (v: Value | undefined, what = 'stamp'): [number, string] {
  if (!Array.isArray(v) || v.length !== 2) throw bad(`${what}: expected [t, writer]`)
  return [num(v[0], what), str(v[1], what)]
}

/** A stored value: anything but null (null is how reads say "absent"). */
export function value (v: Value | undefined): Value {
  if (v === null || v === undefined) throw bad('value: null cannot be stored (a read would not tell it from absence)')
  return v
}
