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

describe('gossip repair', () => {
  const nodes: MoltLibp2p[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
  })

  it('opens gossipsub\'s lost outbound stream again: the peer learns the subscriptions made after the loss', async () => {
    const a = await node(200)
    const b = await node(200)
    nodes.push(a, b)
    await a.dial(b.getMultiaddrs())
    a.services.pubsub.subscribe('before')
    await eventually(() => b.services.pubsub.getSubscribers('before').some(p => p.equals(a.peerId)), 'b sees a subscribed to "before"')

    // a's stream to b is reset (as a timed-out negotiation on b does); a and b stay connected
    const internals = a.services.pubsub as unknown as { streamsOutbound: Map<string, { rawStream: { abort(err: Error): void } }> }
    internals.streamsOutbound.get(b.peerId.toString())!.rawStream.abort(new Error('reset by the test'))
    await eventually(() => !internals.streamsOutbound.has(b.peerId.toString()), 'a\'s gossipsub dropped the stream')
    expect(a.getConnections(b.peerId).length).toBeGreaterThan(0)

    // a subscription made now can only reach b on a new stream
    a.services.pubsub.subscribe('after')
    await eventually(() => b.services.pubsub.getSubscribers('after').some(p => p.equals(a.peerId)), 'b sees a subscribed to "after"', 10_000)
    expect(a.services.gossipRepair.stats().reopened).toBe(1)
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

  it('rejects a bad interval with a typed error', async () => {
    await expect(createLibp2p({
      transports: [memory()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: { ...moltServices({ system: 'test', profile: 'local' }), gossipRepair: gossipRepair({ intervalMs: 0 }) }
    })).rejects.toThrow(InvalidOptionError)
  })
})
