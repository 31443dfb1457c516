/**
 * The partition fault: a libp2p connection gater whose deny list the launcher sets over IPC.
 * Each member of one side denies every peer of the other side — dials, inbound and outbound
 * connections — and closes the connections it already has to them; healing lifts the list.
 *
 * @packageDocumentation
 */
import type { ConnectionGater, PeerId } from '@libp2p/interface'

/** A gater with a mutable deny list. */
export interface PartitionGater {
  /** pass it as `connectionGater` to `createMoltNode` */
  readonly gater: ConnectionGater
  /** denies these peers (peer id strings), replacing the list */
  deny(peers: Iterable<string>): void
  /** lifts every denial */
  heal(): void
  /** whether a peer is denied now */
  denied(peer: PeerId | string): boolean
}

/** Makes a gater that allows everything until told to deny. */
export function createPartitionGater (): PartitionGater {
  let denied = new Set<string>()
  const isDenied = (peer: PeerId | string): boolean => denied.size > 0 && denied.has(peer.toString())
  return {
    gater: {
      denyDialPeer: (peer) => isDenied(peer),
      denyOutboundConnection: (peer) => isDenied(peer),
      denyInboundEncryptedConnection: (peer) => isDenied(peer),
      denyOutboundEncryptedConnection: (peer) => isDenied(peer),
      denyInboundUpgradedConnection: (peer) => isDenied(peer),
      denyOutboundUpgradedConnection: (peer) => isDenied(peer)
    },
    deny (peers) { denied = new Set(peers) },
    heal () { denied = new Set() },
    denied: isDenied
  }
}
