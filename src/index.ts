/**
 * molt: live, decentralised software upgrades for peer-to-peer and edge systems, on libp2p.
 *
 * This module is the whole public API; everything else is internal.
 *
 * @packageDocumentation
 */
export {
  createOverlay,
  moltServices,
  protocolId,
  InvalidOptionError,
  PublicAddressRefusedError,
  MessageTooLargeError,
  UnavailableError
} from './overlay/index.ts'
export type { GossipRepair, GossipRepairStats, MoltLibp2p, MoltServices, MoltServicesOptions, OverlayEncryption, OverlayOptions, OverlayProfile } from './overlay/index.ts'
export { openStore, STORE_FORMAT, StoreFormatError, StoreOpenError } from './state/index.ts'
export type { MoltStore, StoreOptions } from './state/index.ts'
export {
  // building and signing manifests
  createManifest,
  signManifest,
  mergeSignatures,
  verifyManifest,
  validatePolicy,
  encodeSignedManifest,
  decodeSignedManifest,
  MAX_MANIFEST_BYTES,
  MANIFEST_SIGNING_DOMAIN,
  // genesis
  genesisManifest,
  genesisToJSON,
  genesisFromJSON,
  // control messages
  createControl,
  signControl,
  verifyControl,
  encodeSignedControl,
  decodeSignedControl,
  openControlLog,
  CONTROL_SIGNING_DOMAIN,
  ConflictingControlError,
  // chain and propagation
  openManifestChain,
  createManifestPropagation,
  announceTopic,
  // errors
  ManifestError,
  ManifestDecodeError,
  NonCanonicalEncodingError,
  ManifestTooLargeError,
  BadSignatureError,
  UnknownKeyError,
  BelowThresholdError,
  PolicyChangeRefusedError,
  InvalidPolicyError,
  BrokenChainError,
  WrongSystemError,
  ReplayedManifestError,
  InvalidForkProofError,
  GenesisMismatchError,
  GenesisConfigError,
  PropagationDecodeError
} from './manifest/index.ts'
export type {
  GenesisClass,
  GenesisConfig,
  GenesisConfigJSON,
  ManifestChain,
  ManifestChainInit,
  ManifestPropagation,
  ManifestSource,
  PropagationComponents,
  PropagationEvents,
  PropagationInit,
  Verdict,
  Head,
  ControlAction,
  ControlBody,
  ControlLog,
  ControlVerdict,
  RolloutControl,
  SignedControl
} from './manifest/index.ts'
export type * from './manifest/types.ts'
export { createMoltNode } from './node/index.ts'
export type { MoltNode, MoltNodeEvents, MoltNodeOptions, NodeStatus, FleetPeerStatus, PublishResult } from './node/index.ts'
export type { AppRuntime, AppRuntimeEvents, AppRuntimeOptions, AppFleetOptions, RolloutStatus } from './node/app.ts'
export {
  startAdminServer,
  adminRequest,
  assertAdminSocketFree,
  adminSocketPath,
  adminTokenPath,
  AdminError,
  AdminUnavailableError,
  AdminUnauthorizedError,
  AdminBadRequestError,
  AdminRequestTooLargeError,
  AdminSocketInUseError,
  PublishRefusedError,
  AdminTimeoutError,
  AdminRemoteError
} from './node/admin.ts'
export type {
  AdminServer,
  AdminServerOptions,
  AdminRequest,
  AdminRequestOptions,
  AdminResults,
  AdminProgress,
  AdminVerifyResult,
  AdminPublishResult,
  AdminControlResult
} from './node/admin.ts'
export {
  createBundleService,
  BUNDLE_FORMAT,
  CHUNK_SIZE
} from './bundle/index.ts'
export * from './bundle/errors.ts'
export type {
  BundleService,
  BundleServiceComponents,
  BundleServiceEvents,
  BundleServiceInit,
  BundleRoot,
  BundleRecord,
  BundleStats,
  FetchOptions,
  FetchResult,
  FileEntry,
  GcOptions,
  GcResult,
  PackOptions,
  PackResult,
  WaitForHolderOptions
} from './bundle/index.ts'
export {
  createUpgradeLayer,
  isRetryable,
  rpcProtocol,
  LayerError,
  UpgradingError,
  VersionRetiredError,
  VersionUnknownError,
  SimulationRefusedError,
  RemoteError,
  CallTimeoutError,
  RpcDecodeError
} from './layer/index.ts'
export type {
  UpgradeLayer,
  UpgradeLayerComponents,
  UpgradeLayerEvents,
  UpgradeLayerInit,
  CallOptions,
  DispatchTarget,
  Invoke,
  InvokeRequest,
  LayerState,
  VersionSeen
} from './layer/index.ts'
export {
  createUpgradeManager,
  UPGRADE_PHASES,
  UpgradeError,
  HealthCheckFailedError,
  InvariantFailedError,
  StartFailedError,
  InsufficientSpaceError,
  ManagerStateError,
  NoReverseTransformError,
  CrashPointError
} from './manager/index.ts'
export type {
  UpgradeManager,
  UpgradeManagerComponents,
  UpgradeManagerEvents,
  UpgradeManagerInit,
  UpgradeRuntime,
  UpgradePhase,
  ScheduleHook,
  CrashPoint,
  Incarnation,
  PastLink,
  FutureLink,
  RunSpec,
  ServingState,
  HistoryEntry
} from './manager/index.ts'
export type * from './host/model.ts'
export { MOLT_APP_API } from './host/model.ts'
export {
  createHost,
  appNamespace,
  pastSoNamespace,
  futureSoNamespace,
  storeDigest,
  HostError,
  HostNotLoadedError,
  InvalidHostSpecError,
  AppLoadError,
  AppApiMismatchError,
  TargetNotLoadedError,
  MethodNotFoundError,
  HostTimeoutError,
  WorkerCrashedError,
  WorkerFailedError,
  QuiesceTimeoutError,
  TransformFailedError,
  TransformTimeoutError,
  ReadOnlyStoreError,
  InvalidStoreKeyError,
  AppError,
  isAppError
} from './host/index.ts'
export type {
  AppHost,
  BundleSource,
  CheckReport,
  CurrentSpec,
  FutureLinkSpec,
  HostCallOptions,
  HostComponents,
  HostEvents,
  HostInit,
  HostInvokeRequest,
  HostSpec,
  HostStatus,
  PastLinkSpec,
  TransformRequest,
  TransformResult
} from './host/index.ts'
export {
  createFleetView,
  statusTopic,
  evaluateSchedule,
  waitForSchedule,
  createBundleSchedule,
  bundleScheduleExport,
  BUNDLE_SCHEDULE_PREFIX,
  BUILTIN_SCHEDULES,
  simulate,
  plotSvg,
  signStatus,
  encodeSignedStatus,
  decodeSignedStatus,
  STATUS_SIGNING_DOMAIN,
  ScheduleError,
  StatusDecodeError,
  StatusTooLargeError,
  BadStatusSignatureError,
  WrongStatusSystemError,
  StaleStatusError,
  UnknownScheduleError,
  InvalidScheduleParamsError,
  ScheduleFailedError,
  ScheduleTimeoutError,
  InvalidScenarioError
} from './schedule/index.ts'
export type {
  FleetView,
  NetworkFleetView,
  FleetViewComponents,
  FleetViewEvents,
  FleetViewInit,
  StatusRecord,
  StatusUpdate,
  PeerStatus,
  SelfView,
  ScheduleFunction,
  ScheduleInput,
  ScheduleDecision,
  ScheduleParams,
  Scenario,
  SimulationResult,
  SignedStatus,
  BundleSchedule,
  BundleScheduleInit
} from './schedule/index.ts'
export { tryUpgrade, tryUpgradeOffline, DryRunError, DryRunInputError, StoreBusyError } from './manager/dry-run.ts'
export { buildBundle, readBundleDir } from './bundle/index.ts'
export type { DryRunReport, TryUpgradeOptions, DryRunBundle } from './manager/dry-run.ts'
