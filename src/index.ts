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
export type * from './manifest/types.ts'
