/**
 * Manifests: the signed announcement of an upgrade, its canonical codec, the trust policy, the
 * chain of accepted versions, and their propagation (decisions 3 and 4).
 *
 * @packageDocumentation
 */
export * from './errors.ts'
export * from './codec.ts'
export * from './policy.ts'
export * from './genesis.ts'
export * from './chain.ts'
export * from './propagation.ts'
export * from './wire.ts'
export type * from './types.ts'
export * from './control.ts'
