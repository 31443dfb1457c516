import { describe, it, expect, afterEach } from 'vitest'
import { eventually } from '../helpers.ts'
import { createOverlay, InvalidOptionError, PublicAddressRefusedError, type MoltLibp2p } from '../../src/overlay/index.ts'

describe('overlay', () => {
  const nodes: MoltLibp2p[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
  })

  it('refuses a public listen address under the local profile', async () => {
    await expect(createOverlay({ system: 'test', profile: 'local', listen: ['/ip4/0.0.0.0/tcp/0'] }))
      .rejects.toThrow(PublicAddressRefusedError)
  })

  it('rejects a malformed system name and listen address with typed errors', async () => {
    await expect(createOverlay({ system: 'Bad Name', profile: 'local' })).rejects.toThrow(InvalidOptionError)
    await expect(createOverlay({ system: 'test', profile: 'local', listen: ['not-an-addr'] })).rejects.toThrow(InvalidOptionError)
  })

  it('connects two local nodes over loopback tcp and runs the private DHT protocol', async () => {
    const a = await createOverlay({ system: 'test', profile: 'local' })
    nodes.push(a)
    const b = await createOverlay({ system: 'test', profile: 'local' })
    nodes.push(b)
    await a.dial(b.getMultiaddrs())
    // identify may land in more than one peer-store update
    const protocols = await eventually(async () => {
      const peer = await b.peerStore.get(a.peerId)
      return peer.protocols.includes('/molt/test/kad/1.0.0') ? peer.protocols : undefined
    }, 'b identifies a and its DHT protocol')
    expect(protocols).toContain('/molt/test/kad/1.0.0')
    expect(protocols).not.toContain('/ipfs/kad/1.0.0')
  })
})
