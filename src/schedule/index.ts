/**
 * Scheduling: the fleet view (signed status records, reply labels), the built-in scheduling
 * functions, the guard that runs custom ones, and the rollout simulator (decision 10).
 *
 * @packageDocumentation
 */
export * from './errors.ts'
export * from './types.ts'
export * from './builtins.ts'
export * from './evaluate.ts'
export * from './record.ts'
export * from './fleet.ts'
export * from './runner.ts'
export { createBundleSchedule, bundleScheduleExport, BUNDLE_SCHEDULE_PREFIX } from './custom.ts'
export type { BundleSchedule, BundleScheduleInit } from './custom.ts'
export * from './simulate.ts'
export { seededRandom, hashString, rolloutSeed } from './random.ts'
