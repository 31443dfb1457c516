/**
 * The host (decision 7): isolated execution of a node's app versions, and the programming model
 * app authors write against.
 *
 * @packageDocumentation
 */
export * from './model.ts'
export * from './errors.ts'
export { createHost, workerExecArgv } from './host.ts'
export type {
  AppHost, BundleSource, CheckReport, CurrentSpec, FutureLinkSpec, HostCallOptions, HostComponents, HostEvents, HostInit,
  HostInvokeRequest, HostSpec, HostStatus, PastLinkSpec, TransformRequest, TransformResult
} from './host.ts'
export {
  appNamespace, pastSoNamespace, futureSoNamespace, createAppStore, createReadonlyAppStore, storeDigest, clearStore,
  validateKey, encodeValue, decodeValue
} from './store.ts'
export { satisfies } from './semver.ts'
