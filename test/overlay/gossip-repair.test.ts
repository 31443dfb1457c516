/**
 * gossipRepair on real gossipsub nodes: a node whose gossipsub lost its outbound stream to a
 * connected peer (gossipsub never opens it again by itself) gets it back, and the peer learns the
 * subscriptions made meanwhile; a connection whose identify failed at both ends (gossipsub never
 * hears of the peer) is identified again.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { memory } from '@libp2p/memory'
import { createLibp2p } from 'libp2p'
import type { PeerId } from '@libp2p/interface'
import { describe, it, expect, afterEach } from 'vitest'
import { gossipRepair, InvalidOptionError, moltServices, type MoltLibp2p } from '../../src/overlay/index.ts'
import { eventually, memoryAddress } from '../helpers.ts'

async function node (repairMs: number): Promise<MoltLibp2p> {
  return await createLibp2p({
    addresses: { listen: [memoryAddress()] },
    transports: [memory()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { ...moltServices({ system: 'test', profile: 'local' }), gossipRepair: gossipRepair({ intervalMs: repairMs }) }
  })
}

/**
 * Records the end of each identify `x` runs (libp2p tells gossipsub of the peer in the same event),
 * and whether gossipsub's queue of streams to open has drained since.
 */
function identifies (x: MoltLibp2p): (y: MoltLibp2p) => boolean {
  const done = new Set<string>()
  x.addEventListener('peer:identify', (e) => { done.add(e.detail.peerId.toString()) })
  const queue = (x.services.pubsub as unknown as { outboundInflightQueue: { readableLength: number } }).outboundInflightQueue
  return (y) => done.has(y.peerId.toString()) && queue.readableLength === 0
}

describe('gossip repair', () => {
  const nodes: MoltLibp2p[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
  })

  it('opens gossipsub\'s lost outbound stream again: the peer learns the subscriptions made after the loss', async () => {
    const a = await node(200)
    const b = await node(200)
    nodes.push(a, b)
    const aIdentified = identifies(a)
    const bIdentified = identifies(b)
    await a.dial(b.getMultiaddrs())
    a.services.pubsub.subscribe('before')
    await eventually(() => b.services.pubsub.getSubscribers('before').some(p => p.equals(a.peerId)), 'b sees a subscribed to "before"')
    // a's own identify of b may still be under way (a learnt of b from b's inbound stream); when
    // it ends libp2p tells gossipsub, which would open the lost stream itself, not the repair
    await eventually(() => aIdentified(b) && bIdentified(a), 'each side has identified the other')

    // a's stream to b is reset (as a timed-out negotiation on b does); a and b stay connected
    const internals = a.services.pubsub as unknown as { streamsOutbound: Map<string, { rawStream: { abort(err: Error): void } }> }
    internals.streamsOutbound.get(b.peerId.toString())!.rawStream.abort(new Error('reset by the test'))
    await eventually(() => !internals.streamsOutbound.has(b.peerId.toString()), 'a\'s gossipsub dropped the stream')
    expect(a.getConnections(b.peerId).length).toBeGreaterThan(0)

    // a subscription made now can only reach b on a new stream
    a.services.pubsub.subscribe('after')
    await eventually(() => b.services.pubsub.getSubscribers('after').some(p => p.equals(a.peerId)), 'b sees a subscribed to "after"', 10_000)
    // either repair may come first: a's (the stream is missing) or b's, whose gossipsub dropped a
    // when its end of the stream failed (a handed back to b's gossipsub opens a stream to a, and
    // an inbound stream makes a's gossipsub open its own); without either, b never hears again
    expect(a.services.gossipRepair.stats().reopened + b.services.gossipRepair.stats().readded).toBeGreaterThanOrEqual(1)
  })

  it('identifies again a connection whose identify failed at both ends: gossipsub then hears of the peer', async () => {
    const a = await node(200)
    const b = await node(200)
    nodes.push(a, b)
    // the identify that libp2p runs on the new connection fails at both ends (as a timed-out one
    // on a loaded node does); later ones are the service's own
    for (const n of [a, b]) {
      const service = n.services.identify
      const real = service.identify.bind(service)
      let first = true
      service.identify = async (connection, options) => {
        if (first) {
          first = false
          throw new Error('identify failed (the test)')
        }
        return await real(connection, options)
      }
    }
    a.services.pubsub.subscribe('topic')
    b.services.pubsub.subscribe('topic')
    await a.dial(b.getMultiaddrs())

    // without the repair neither gossipsub ever hears of the other: no stream, no subscription
    await eventually(() => a.services.pubsub.getSubscribers('topic').some(p => p.equals(b.peerId)) &&
      b.services.pubsub.getSubscribers('topic').some(p => p.equals(a.peerId)), 'each sees the other subscribed', 10_000)
    expect(a.services.gossipRepair.stats().reidentified + b.services.gossipRepair.stats().reidentified).toBeGreaterThan(0)
    expect(a.getConnections(b.peerId)).toHaveLength(1)
  })

  it('hands back a peer gossipsub forgot while connected (a late disconnect), and removes it when the connection ends', async () => {
    const a = await node(200)
    const b = await node(200)
    nodes.push(a, b)
    const aIdentified = identifies(a)
    const bIdentified = identifies(b)
    a.services.pubsub.subscribe('before')
    b.services.pubsub.subscribe('before')
    await a.dial(b.getMultiaddrs())
    await eventually(() => aIdentified(b) && bIdentified(a) && a.services.pubsub.getSubscribers('before').some(p => p.equals(b.peerId)) &&
      b.services.pubsub.getSubscribers('before').some(p => p.equals(a.peerId)), 'each sees the other subscribed to "before"')

    // what the registrar's late disconnect of an earlier connection does: gossipsub removes b and
    // closes its streams while the connection stays; the registrar's filter still holds b, so no
    // identify would tell gossipsub again
    const internals = a.services.pubsub as unknown as { peers: Map<string, unknown>, onPeerDisconnected(peer: PeerId): void }
    internals.onPeerDisconnected(b.peerId)
    expect(internals.peers.has(b.peerId.toString())).toBe(false)
    expect(a.getConnections(b.peerId).length).toBeGreaterThan(0)

    // subscriptions made now cross only once a's gossipsub knows b again
    a.services.pubsub.subscribe('after')
    b.services.pubsub.subscribe('after')
    await eventually(() => a.services.pubsub.getSubscribers('after').some(p => p.equals(b.peerId)) &&
      b.services.pubsub.getSubscribers('after').some(p => p.equals(a.peerId)), 'each sees the other subscribed to "after"', 10_000)
    expect(a.services.gossipRepair.stats().readded).toBe(1)
    expect(a.services.gossipRepair.stats().reidentified).toBe(0)

    // the connection ends: b leaves a's gossipsub
    await a.hangUp(b.peerId)
    await eventually(() => !internals.peers.has(b.peerId.toString()), 'a\'s gossipsub removed b')
  })

  it('rejects a bad interval with a typed error', async () => {
    await expect(createLibp2p({
      transports: [memory()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { ...moltServices({ system: 'test', profile: 'local' }), gossipRepair: gossipRepair({ intervalMs: 0 }) }
    })).rejects.toThrow(InvalidOptionError)
  })
})
