/**
 * Re-opens gossipsub's stream to a connected peer when gossipsub has none.
 *
 * Gossipsub opens its one outbound stream to a peer when the peer connects (or opens a stream to
 * it). When that open fails, or the new stream is closed at once (a protocol negotiation that
 * timed out on a loaded node), it never tries again ("TODO make this behavior more robust" in
 * its source): for as long as the connection lasts, the peer never learns this node's
 * subscriptions and gets no gossip from it. Seen on this project's 100-node test network under
 * load: a link stayed without the announce topic for the whole two-minute wait.
 *
 * Gossipsub also never hears of a connected peer whose identify failed (timed out on a loaded
 * node): libp2p tells a protocol's topology of a peer only once identify has listed the peer's
 * protocols. When it failed at both ends the connection carries no gossipsub stream either way,
 * for as long as it lasts (seen on the same test network: two links of 264). Such a connection
 * is identified again, once: libp2p then tells gossipsub, if the peer speaks it.
 *
 * @packageDocumentation
 */
import type { AbortOptions, ComponentLogger, Connection, Logger, PeerId, Startable } from '@libp2p/interface'
import { InvalidOptionError } from './errors.ts'
import type { GossipSub } from '@libp2p/gossipsub'

/**
 * Options of {@link gossipRepair}.
 */
export interface GossipRepairInit {
  /**
   * How often the peers gossipsub knows are checked for a missing outbound stream. A peer found
   * without one at two checks in a row has its stream opened again (one check's grace covers a
   * stream still being opened).
   *
   * @default 5000
   */
  intervalMs?: number
}

/**
 * What the repair needs of the node: its gossipsub service, under the name molt gives it.
 */
export interface GossipRepairComponents {
  pubsub: GossipSub
  connectionManager: { getConnections(peer?: PeerId): Connection[] }
  logger: ComponentLogger
  /** libp2p's identify service (`@libp2p/identify`); without it a failed identify is not repaired */
  identify?: { identify(connection: Connection, options?: AbortOptions): Promise<unknown> }
}

/** How long an identify made again may take (libp2p's own default). */
const IDENTIFY_TIMEOUT_MS = 5000

/**
 * Gossipsub's handler for a newly connected peer: it queues the opening of the outbound stream
 * and sends the subscriptions on it.
 */
type PeerConnectedHandler = (peer: PeerId, connection: Connection) => void

/**
 * What the repair reads of gossipsub's implementation (its class, not its `GossipSub`
 * interface): the peers it knows, the outbound streams it holds, and its connect handler.
 * Checked at start: a gossipsub without them makes the repair log once and do nothing.
 */
interface GossipsubInternals {
  peers: Map<string, PeerId>
  streamsOutbound: Map<string, unknown>
  onPeerConnected: PeerConnectedHandler
  /** the connects still waiting for their stream, opened one at a time */
  outboundInflightQueue?: { readableLength?: number }
}

function internalsOf (pubsub: GossipSub): GossipsubInternals | undefined {
  const g = pubsub as unknown as Partial<Record<keyof GossipsubInternals, unknown>>
  if (g.peers instanceof Map && g.streamsOutbound instanceof Map && typeof g.onPeerConnected === 'function') {
    return g as GossipsubInternals
  }
  return undefined
}

/**
 * Counts of a {@link GossipRepair}'s work.
 */
export interface GossipRepairStats {
  /** outbound streams opened again */
  reopened: number
  /** connections identified again because gossipsub had not heard of their peer */
  reidentified: number
}

/**
 * The service: see the module's description.
 */
export interface GossipRepair {
  stats(): GossipRepairStats
}

class DefaultGossipRepair implements GossipRepair, Startable {
  readonly [Symbol.toStringTag] = 'molt:gossip-repair'
  private readonly log: Logger
  private readonly intervalMs: number
  private timer?: ReturnType<typeof setInterval>
  /** peers found without an outbound stream at the last check */
  private missing = new Set<string>()
  /** open connections whose peer gossipsub did not know at the last check */
  private unheard = new Set<Connection>()
  /** connections already identified again: once each */
  private readonly identifiedAgain = new WeakSet<Connection>()
  private reopened = 0
  private reidentified = 0
  private readonly identify?: GossipRepairComponents['identify']

  constructor (private readonly components: GossipRepairComponents, init: GossipRepairInit = {}) {
    this.log = components.logger.forComponent('molt:overlay:gossip-repair')
    const intervalMs = init.intervalMs ?? 5000
    if (!(typeof intervalMs === 'number' && intervalMs > 0 && Number.isFinite(intervalMs))) {
      throw new InvalidOptionError(`gossipRepair: intervalMs must be a positive number (got ${String(intervalMs)})`)
    }
    this.intervalMs = intervalMs
    try {
      this.identify = components.identify
    } catch {
      // libp2p's components throw on a service that is not configured
    }
  }

  start (): void {
    const gossipsub = internalsOf(this.components.pubsub)
    if (gossipsub == null) {
      this.log.error('this gossipsub does not expose its peers, outbound streams and connect handler: its lost streams are not repaired')
      return
    }
    this.timer = setInterval(() => { this.check(gossipsub) }, this.intervalMs)
    this.timer.unref?.()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.missing.clear()
    this.unheard.clear()
  }

  stats (): GossipRepairStats {
    return { reopened: this.reopened, reidentified: this.reidentified }
  }

  private check (gossipsub: GossipsubInternals): void {
    // gossipsub opens its outbound streams one at a time, each negotiation bounded by 10 s: on a
    // loaded node (the 100-node agreement test) the queue ran more than 10 s behind, and peers
    // still in it look the same as lost ones. Only a drained queue tells them apart.
    if ((gossipsub.outboundInflightQueue?.readableLength ?? 0) > 0) return
    const missing = new Set<string>()
    for (const [id, peer] of gossipsub.peers) {
      if (gossipsub.streamsOutbound.has(id)) continue
      if (!this.missing.has(id)) {
        missing.add(id)
        continue
      }
      const connection = this.components.connectionManager.getConnections(peer).find(c => c.status === 'open')
      if (connection == null) continue
      this.log('no gossipsub stream to %p for %d ms: opening it again', peer, this.intervalMs)
      this.reopened++
      gossipsub.onPeerConnected(peer, connection)
    }
    this.missing = missing
    this.identifyUnheard(gossipsub)
  }

  /** Identifies again a connection whose peer gossipsub has not heard of at two checks in a row. */
  private identifyUnheard (gossipsub: GossipsubInternals): void {
    const identify = this.identify
    if (identify == null) return
    const unheard = new Set<Connection>()
    for (const connection of this.components.connectionManager.getConnections()) {
      if (connection.status !== 'open' || connection.limits != null || this.identifiedAgain.has(connection)) continue
      if (gossipsub.peers.has(connection.remotePeer.toString())) continue
      if (!this.unheard.has(connection)) {
        unheard.add(connection)
        continue
      }
      this.identifiedAgain.add(connection)
      this.reidentified++
      this.log('gossipsub has not heard of %p for %d ms: identifying its connection again', connection.remotePeer, this.intervalMs)
      identify.identify(connection, { signal: AbortSignal.timeout(IDENTIFY_TIMEOUT_MS) }).catch((err: unknown) => {
        this.log('identifying %p again failed - %e', connection.remotePeer, err)
      })
    }
    this.unheard = unheard
  }
}

/**
 * A libp2p service that re-opens gossipsub's outbound stream to a connected peer when gossipsub
 * has lost it (see the module's description). Include it after `pubsub` in the services.
 */
export function gossipRepair (init: GossipRepairInit = {}): (components: GossipRepairComponents) => GossipRepair {
  return (components) => new DefaultGossipRepair(components, init)
}
