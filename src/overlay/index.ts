/**
 * The libp2p assembly every molt node runs on, and what molt's protocols share. It knows nothing
 * of manifests, bundles or versions.
 *
 * @packageDocumentation
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub, type GossipSub, type GossipsubOpts } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper, removePrivateAddressesMapper, type KadDHT } from '@libp2p/kad-dht'
import { memory } from '@libp2p/memory'
import { plaintext } from '@libp2p/plaintext'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { sha256 } from 'multiformats/hashes/sha2'
import { createLibp2p, type Libp2pOptions } from 'libp2p'
import { InvalidOptionError } from './errors.ts'
import { gossipRepair, type GossipRepair } from './gossip-repair.ts'
import { assertLocalAddresses, localAllowList, parseAddress, type OverlayProfile } from './profile.ts'
import type { Identify } from '@libp2p/identify'
import type { Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import type { Ping } from '@libp2p/ping'
import type { ServiceFactoryMap } from 'libp2p'
import type { Datastore } from 'interface-datastore'

export * from './errors.ts'
export * from './gossip-repair.ts'
export * from './profile.ts'
export * from './request.ts'
export * from './session.ts'

/**
 * The libp2p services molt needs on a node. A user who builds their own libp2p node includes
 * {@link moltServices} in its `services` so these exist under these names.
 */
// a type alias, not an interface: libp2p's ServiceMap constraint needs an implicit index signature
// eslint-disable-next-line @typescript-eslint/consistent-type-definitions
export type MoltServices = {
  /** gossipsub, carrying the announce and status topics */
  pubsub: GossipSub
  /** re-opens gossipsub's stream to a connected peer when gossipsub lost it */
  gossipRepair: GossipRepair
  /** molt's own Kademlia DHT, under a protocol prefix private to the system */
  moltDht: KadDHT
  /** identify, which kad-dht and gossipsub rely on */
  identify: Identify
  /** ping, which kad-dht relies on */
  ping: Ping
}

/**
 * A libp2p node that carries molt's services.
 */
export type MoltLibp2p = Libp2p<MoltServices>

/**
 * Options for {@link moltServices}.
 */
export interface MoltServicesOptions {
  /**
   * The system's name: it scopes every protocol and topic, so two systems on one network never
   * exchange molt traffic.
   */
  system: string

  /**
   * @default 'network'
   */
  profile?: OverlayProfile
}

/** A system name is part of protocol ids and topics: keep it to a safe alphabet. */
const SYSTEM_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/

/**
 * Throws `InvalidOptionError` unless the system name fits protocol ids and topics.
 */
export function validateSystemName (system: unknown): string {
  if (typeof system !== 'string' || !SYSTEM_NAME.test(system)) {
    throw new InvalidOptionError(`system: must be 1-64 characters of a-z, 0-9, ".", "_" or "-", starting with a letter or digit (got ${JSON.stringify(system)})`)
  }
  return system
}

/**
 * The protocol id of one of the system's protocols, e.g. `/molt/chord/head/1.0.0`.
 */
export function protocolId (system: string, name: string, version: string = '1.0.0'): string {
  return `/molt/${system}/${name}/${version}`
}

/**
 * The peers this node has a connection to, each once: the connections' own `PeerId` objects.
 * `libp2p.getPeers()` returns the same set, but collects it as strings and parses each back into
 * a new peer id (base58 decode, then a fresh encode for its `toString()`): in a 100-node
 * in-process ring, where every node listed its peers each second, that was a tenth of the event
 * loop.
 */
export function connectedPeers (libp2p: Pick<Libp2p, 'getConnections'>): PeerId[] {
  const seen = new Map<string, PeerId>()
  for (const connection of libp2p.getConnections()) {
    const peer = connection.remotePeer
    const key = peer.toString()
    if (!seen.has(key)) seen.set(key, peer)
  }
  return [...seen.values()]
}

/**
 * A gossipsub message id that is the hash of the data alone, so one manifest relayed by two
 * peers is one message (the default id is publisher key + sequence number).
 */
async function contentMessageId (message: { data: Uint8Array }): Promise<Uint8Array> {
  const digest = await sha256.digest(message.data)
  return digest.digest
}

/**
 * The gossipsub options molt sets when it builds the service itself. Messages are not signed by
 * gossipsub (`StrictNoSign`, message ids from content): molt's payloads sign themselves. An
 * application that gossips its own topics through this service, and needs gossipsub to
 * authenticate their authors, must sign its payloads itself.
 */
export function gossipsubOptions (profile: OverlayProfile): Partial<GossipsubOpts> {
  const options: Partial<GossipsubOpts> = {
    msgIdFn: contentMessageId,
    // Every payload molt gossips carries its own signature, checked by the topic's validator:
    // manifests and controls the release key's, status records the node's. Gossipsub's own
    // per-message signature would be checked again at every hop: with it, signature checks were
    // a quarter of a 100-node in-process ring's CPU during a rollout. Every node of a system must
    // agree on this (a node that signs has its messages refused by one that does not).
    globalSignaturePolicy: 'StrictNoSign',
    // molt also submits directly and catches up through head exchange, so a publish that finds
    // no mesh yet is not an error
    allowPublishToZeroTopicPeers: true,
    ignoreDuplicatePublishError: true,
    // head exchange and catch-up run on limited connections; gossip may as well
    runOnLimitedConnection: true
  }
  if (profile === 'local') {
    // every testnet peer shares 127.0.0.1: the colocation penalty would graylist them all
    options.scoreParams = { IPColocationFactorWeight: 0 }
  }
  return options
}

/**
 * The libp2p services molt needs, to spread into a libp2p node's `services`.
 *
 * @example
 * ```ts
 * const libp2p = await createLibp2p({
 *   // ...transports, encrypters, muxers
 *   services: { ...moltServices({ system: 'chord' }) }
 * })
 * ```
 */
export function moltServices (options: MoltServicesOptions): ServiceFactoryMap<MoltServices> {
  const system = validateSystemName(options.system)
  const profile = options.profile ?? 'network'
  return {
    identify: identify(),
    // kad-dht pings new contacts and libp2p's connection monitor (network profile) pings every
    // 10 s, both on this protocol: with the default of one outbound stream per connection a
    // collision closes the connection, so allow a few
    ping: ping({ maxOutboundStreams: 4, maxInboundStreams: 4 }),
    pubsub: gossipsub(gossipsubOptions(profile)),
    // after pubsub: libp2p hands each service the ones configured before it
    gossipRepair: gossipRepair(),
    moltDht: kadDHT({
      protocol: protocolId(system, 'kad'),
      datastorePrefix: `/molt/${system}/dht`,
      logPrefix: 'molt:overlay:dht',
      metricsPrefix: 'molt_dht',
      // a node that serves bundles must answer DHT queries
      clientMode: false,
      // the default mapper drops loopback addresses, and provide/find then hang on a testnet
      peerInfoMapper: profile === 'local' ? passthroughMapper : removePrivateAddressesMapper,
      allowQueryWithZeroPeers: true
    })
  } as unknown as ServiceFactoryMap<MoltServices>
}

/**
 * Options for {@link createOverlay}.
 */
export interface OverlayOptions extends MoltServicesOptions {
  /**
   * The node's identity. Without it a fresh ed25519 key is made each start.
   */
  privateKey?: PrivateKey

  /**
   * Multiaddrs to listen on. `/memory/<name>` addresses use the in-memory transport.
   *
   * @default ['/ip4/0.0.0.0/tcp/0'] for the network profile, ['/ip4/127.0.0.1/tcp/0'] for local
   */
  listen?: string[]

  /**
   * Where libp2p keeps its peer store and DHT records.
   *
   * @default an in-memory datastore
   */
  datastore?: Datastore

  /**
   * Connection gater, e.g. to cut a testnet in two.
   *
   * @default allows every connection
   */
  connectionGater?: Libp2pOptions['connectionGater']

  /**
   * How connections are secured. `noise` encrypts and authenticates every connection.
   * `plaintext` (libp2p's plaintext exchange: each side's public key is checked against its peer
   * id, nothing is encrypted) is for simulations that run many nodes in one process over the
   * memory transport, where there is no wire to protect and noise (ChaCha20-Poly1305 and its
   * framing) was 22–23 % of the one event loop's CPU. It is refused unless the profile is
   * `local` and every listen address is a `/memory` address, and such a node has the memory
   * transport only, so it can neither listen nor dial over TCP.
   *
   * @default 'noise'
   */
  encryption?: OverlayEncryption
}

/**
 * How an overlay's connections are secured (see {@link OverlayOptions.encryption}).
 */
export type OverlayEncryption = 'noise' | 'plaintext'

/**
 * Builds and starts a libp2p node with molt's services, validating the options first.
 */
export async function createOverlay (options: OverlayOptions): Promise<MoltLibp2p> {
  const profile = options.profile ?? 'network'
  if (profile !== 'network' && profile !== 'local') {
    throw new InvalidOptionError(`profile: must be "network" or "local" (got ${JSON.stringify(profile)})`)
  }
  const listenStrings = options.listen ?? [profile === 'local' ? '/ip4/127.0.0.1/tcp/0' : '/ip4/0.0.0.0/tcp/0']
  if (!Array.isArray(listenStrings)) {
    throw new InvalidOptionError('listen: must be an array of multiaddr strings')
  }
  const listen = listenStrings.map(s => parseAddress(s, 'listen'))
  if (profile === 'local') {
    assertLocalAddresses(listen, 'listen')
  }
  const encryption = options.encryption ?? 'noise'
  if (encryption !== 'noise' && encryption !== 'plaintext') {
    throw new InvalidOptionError(`encryption: must be "noise" or "plaintext" (got ${JSON.stringify(encryption)})`)
  }
  if (encryption === 'plaintext') {
    const notMemory = listen.find(ma => ma.getComponents()[0]?.name !== 'memory')
    if (profile !== 'local' || listen.length === 0 || notMemory != null) {
      throw new InvalidOptionError(`encryption: "plaintext" needs the local profile and /memory listen addresses only (got profile ${profile}${notMemory != null ? `, ${notMemory.toString()}` : ''})`)
    }
  }

  const config: Libp2pOptions<MoltServices> = {
    addresses: { listen: listen.map(ma => ma.toString()) },
    transports: encryption === 'plaintext' ? [memory()] : [tcp(), memory()],
    connectionEncrypters: [encryption === 'plaintext' ? plaintext() : noise()],
    streamMuxers: [yamux()],
    services: moltServices(options),
    connectionManager: profile === 'local'
      ? { allow: localAllowList(), inboundConnectionThreshold: Infinity, maxIncomingPendingConnections: 1000 }
      : {},
    // On one machine a peer that dies has its connections closed by the kernel (or, in memory,
    // by its own node), so the monitor's liveness pings find nothing; they were a fifth of every
    // node's streams on the 16-process testnet and two thirds of them in a 60-node in-process ring
    ...(profile === 'local' ? { connectionMonitor: { enabled: false } } : {})
  }
  if (options.privateKey != null) {
    config.privateKey = options.privateKey
  }
  if (options.datastore != null) {
    config.datastore = options.datastore
  }
  if (options.connectionGater != null) {
    config.connectionGater = options.connectionGater
  }
  return await createLibp2p(config)
}
