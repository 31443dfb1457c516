/**
 * Seeded randomness for SFs and the simulator: fast, reproducible, no global state.
 */
import type { RandomSource } from './types.ts'

/** 32-bit FNV-1a of a string. */
export function hashString (s: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

/** A 32-bit mixer (the finaliser of murmur3), for deriving independent streams. */
export function mix32 (x: number): number {
  let h = x >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b) >>> 0
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35) >>> 0
  h ^= h >>> 16
  return h >>> 0
}

/**
 * A mulberry32 generator: numbers in [0, 1) from a 32-bit seed.
 */
export function mulberry32 (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The random source an SF gets: seeded by (seed, node), `random()` draws the next number,
 * `random(key)` a fixed number for that key.
 *
 * @param seed - the rollout's seed (e.g. derived from the manifest's CID)
 * @param node - this node's peer id, so nodes flip independent coins
 */
export function seededRandom (seed: number, node: string): RandomSource {
  const base = hashString(node, mix32(seed ^ 0x9e3779b9))
  const next = mulberry32(base)
  return (key?: string | number) => {
    if (key === undefined) {
      return next()
    }
    const k = typeof key === 'number' ? mix32(base ^ mix32(key * 2654435761 + 1)) : hashString(key, base)
    return mulberry32(k)()
  }
}

/**
 * The seed of a rollout: derived from the manifest's CID (its digest bytes), so every node
 * draws from the same seeded sources for the same manifest and a re-signed body draws anew.
 */
export function rolloutSeed (digest: Uint8Array): number {
  return digest.reduce((a, b) => (a * 31 + b) >>> 0, 7)
}
