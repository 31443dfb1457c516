/**
 * Timing and sizes. Chosen so that a 16-node ring on one machine converges in a few seconds
 * while the background traffic (stabilize, check-predecessor, fingers, anti-entropy) stays near
 * ten calls a second per node; a build with `pace` N makes every period N times longer.
 * Readable at run time through each node's `config` method.
 */
import type { ChordConfig } from './types.ts'

/** Replaced by the build (`build.ts`, option `pace`); absent when the sources run directly. */
declare const CHORD_PACE: number | undefined

/**
 * How many times slower than below the background jobs run (1 unless the bundles were built with
 * `pace`): many nodes sharing one machine's cores, as `--in-process` rings of a hundred do, cannot
 * all stabilize twice a second. Deadlines stay as they are: a longer one only holds a client's
 * lane longer on a call that will not be answered.
 */
export const PACE: number = typeof CHORD_PACE === 'number' && CHORD_PACE >= 1 ? CHORD_PACE : 1

/** The defaults of every node and client. */
export const CONFIG: Readonly<ChordConfig> = Object.freeze({
  /** successor check and notify */
  stabilizeMs: 500 * PACE,
  /** a few finger lookups per tick */
  fixFingersMs: 1000 * PACE,
  /** predecessor liveness, and its predecessor list */
  checkPredecessorMs: 1000 * PACE,
  /** a lookup of our own id through a random contact: what merges two rings after a heal */
  rejoinMs: 2500 * PACE,
  /** moving records that belong elsewhere to their owner */
  rehomeMs: 2000 * PACE,
  /** anti-entropy with the replicas (v2 and later) */
  syncMs: 2000 * PACE,
  /** after start, or when the range grew, reads also ask the successors */
  warmMs: 4000 * PACE,
  /** length of the successor list */
  successors: 4,
  /** copies of each item at v2 and later (primary + r-1 successors) */
  replicas: 3,
  /** deadline of one ring-maintenance call (lookups and writes get a few times more) */
  callMs: 2000
})

/** Deadline of a whole client operation, retries included (the caller's own deadline also bounds it). */
export const CLIENT_OP_MS = 7000
/** How often a client refreshes its view of the ring members. */
export const CLIENT_REFRESH_MS = 2000 * PACE
/** Hops before a lookup gives up. */
export const MAX_HOPS = 24
/** Bytes of records per hand-off, replication or anti-entropy message (the layer's limit is 64 KiB). */
export const BATCH_BYTES = 24_000
/** Finger lookups per fix-fingers tick. */
export const FINGER_LOOKUPS = 2
/** A peer that failed is avoided this long, doubling up to MAX_SUSPECT_MS while it keeps failing. */
export const SUSPECT_MS = 1500
export const MAX_SUSPECT_MS = 8000
