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
export type { MoltLibp2p, MoltServices, MoltServicesOptions, OverlayOptions, OverlayProfile } from './overlay/index.ts'
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
  Head
} from './manifest/index.ts'
export type * from './manifest/types.ts'
