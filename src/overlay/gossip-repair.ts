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
 * Gossipsub can also forget a peer that is still connected, for as long as the connection lasts.
 * libp2p's registrar tells it of a disconnect only after an awaited peer-store read: when a
 * connection closes and a new one to the same peer opens meanwhile (on a loaded node), the late
 * disconnect removes the peer gossipsub had just added over the new connection, and closes its
 * streams; the registrar's topology filter then no longer holds the peer either way, and nothing
 * tells gossipsub again. And it never hears of a connected peer whose identify failed: libp2p
 * tells a protocol's topology of a peer only once identify has listed the peer's protocols. A
 * connection whose peer gossipsub does not know is handed to gossipsub's own connect handler when
 * the peer store says the peer speaks gossipsub, and identified again, once, when it does not
 * know; a peer handed back this way is removed from gossipsub by the repair when its last
 * connection closes (the registrar, which did not hand it over, would not).
 *
 * @packageDocumentation
 */
import type { AbortOptions, ComponentLogger, Connection, Libp2pEvents, Logger, PeerId, Peer, Startable, TypedEventTarget } from '@libp2p/interface'
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
  /** what libp2p knows of the peer: whether it speaks gossipsub */
  peerStore: { get(peer: PeerId, options?: AbortOptions): Promise<Peer> }
  /** libp2p's events: a peer handed back to gossipsub is removed from it on `peer:disconnect` */
  events: TypedEventTarget<Libp2pEvents>
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
  protocols: string[]
  onPeerConnected: PeerConnectedHandler
  onPeerDisconnected(peer: PeerId): void
  /** the connects still waiting for their stream, opened one at a time */
  outboundInflightQueue?: { readableLength?: number }
}

function internalsOf (pubsub: GossipSub): GossipsubInternals | undefined {
  const g = pubsub as unknown as Partial<Record<keyof GossipsubInternals, unknown>>
  if (g.peers instanceof Map && g.streamsOutbound instanceof Map && Array.isArray(g.protocols) &&
    typeof g.onPeerConnected === 'function' && typeof g.onPeerDisconnected === 'function') {
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
  /** connections whose peer gossipsub did not know, handed to its connect handler */
  readded: number
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
  /** connections whose peer store read is under way */
  private readonly reading = new WeakSet<Connection>()
  /** peers handed back to gossipsub by the repair, which it removes again on their disconnect */
  private readonly readdedPeers = new Map<string, PeerId>()
  private reopened = 0
  private readded = 0
  private reidentified = 0
  private readonly identify?: GossipRepairComponents['identify']
  private gossipsub?: GossipsubInternals
  private readonly onDisconnect = (e: CustomEvent<PeerId>): void => {
    const id = e.detail.toString()
    if (this.readdedPeers.delete(id)) this.gossipsub?.onPeerDisconnected(e.detail)
  }

  private readonly components: GossipRepairComponents

  constructor (components: GossipRepairComponents, init: GossipRepairInit = {}) {
    this.components = components
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
      this.log.error('this gossipsub does not expose its peers, outbound streams, protocols and connect handlers: its lost streams are not repaired')
      return
    }
    this.gossipsub = gossipsub
    this.components.events.addEventListener('peer:disconnect', this.onDisconnect)
    this.timer = setInterval(() => { this.check(gossipsub) }, this.intervalMs)
    this.timer.unref?.()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
    this.components.events.removeEventListener('peer:disconnect', this.onDisconnect)
    this.gossipsub = undefined
    this.missing.clear()
    this.unheard.clear()
    this.readdedPeers.clear()
  }

  stats (): GossipRepairStats {
    return { reopened: this.reopened, readded: this.readded, reidentified: this.reidentified }
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
    this.repairUnheard(gossipsub)
  }

  /**
   * Hands back to gossipsub a connection whose peer it has not known at two checks in a row (once
   * the peer store says the peer speaks gossipsub), or identifies it again, once, when the peer
   * store does not know.
   */
  private repairUnheard (gossipsub: GossipsubInternals): void {
    const unheard = new Set<Connection>()
    for (const connection of this.components.connectionManager.getConnections()) {
      if (connection.status !== 'open' || connection.limits != null) continue
      if (gossipsub.peers.has(connection.remotePeer.toString())) continue
      unheard.add(connection)
      if (!this.unheard.has(connection) || this.reading.has(connection)) continue
      this.reading.add(connection)
      void this.readd(gossipsub, connection).finally(() => { this.reading.delete(connection) })
    }
    this.unheard = unheard
  }

  private async readd (gossipsub: GossipsubInternals, connection: Connection): Promise<void> {
    const peer = connection.remotePeer
    const known = await this.components.peerStore.get(peer, { signal: AbortSignal.timeout(IDENTIFY_TIMEOUT_MS) }).catch(() => undefined)
    if (this.gossipsub !== gossipsub || connection.status !== 'open' || gossipsub.peers.has(peer.toString())) return
    if (known?.protocols.some(p => gossipsub.protocols.includes(p)) === true) {
      this.log('gossipsub does not know %p, connected and speaking gossipsub, for %d ms: handing it back', peer, this.intervalMs)
      this.readded++
      this.readdedPeers.set(peer.toString(), peer)
      gossipsub.onPeerConnected(peer, connection)
      return
    }
    const identify = this.identify
    if (identify == null || this.identifiedAgain.has(connection)) return
    this.identifiedAgain.add(connection)
    this.reidentified++
    this.log('gossipsub has not heard of %p for %d ms: identifying its connection again', peer, this.intervalMs)
    await identify.identify(connection, { signal: AbortSignal.timeout(IDENTIFY_TIMEOUT_MS) }).catch((err: unknown) => {
      this.log('identifying %p again failed - %e', peer, err)
    })
  }
}

/**
 * A libp2p service that re-opens gossipsub's outbound stream to a connected peer when gossipsub
 * has lost it (see the module's description). Include it after `pubsub` in the services.
 */
export function gossipRepair (init: GossipRepairInit = {}): (components: GossipRepairComponents) => GossipRepair {
  return (components) => new DefaultGossipRepair(components, init)
}
