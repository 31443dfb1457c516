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

  it('refuses plaintext outside the local profile on memory addresses, with a typed error', async () => {
    await expect(createOverlay({ system: 'test', profile: 'local', encryption: 'plaintext' }))
      .rejects.toThrow(/plaintext.*\/memory/)
    await expect(createOverlay({ system: 'test', profile: 'local', encryption: 'plaintext', listen: ['/memory/ov-a', '/ip4/127.0.0.1/tcp/0'] }))
      .rejects.toThrow(InvalidOptionError)
    await expect(createOverlay({ system: 'test', profile: 'network', encryption: 'plaintext', listen: ['/memory/ov-b'] }))
      .rejects.toThrow(InvalidOptionError)
    await expect(createOverlay({ system: 'test', profile: 'local', listen: ['/memory/ov-c'], encryption: 'none' as 'noise' }))
      .rejects.toThrow(InvalidOptionError)
  })

  it('connects plaintext nodes over memory only: no TCP, and no link to a noise node', async () => {
    const a = await createOverlay({ system: 'test', profile: 'local', encryption: 'plaintext', listen: ['/memory/ov-plain-a'] })
    nodes.push(a)
    const b = await createOverlay({ system: 'test', profile: 'local', encryption: 'plaintext', listen: ['/memory/ov-plain-b'] })
    nodes.push(b)
    const connection = await a.dial(b.getMultiaddrs())
    expect(connection.encryption).toBe('/plaintext/2.0.0')
    await eventually(async () => (await b.peerStore.get(a.peerId)).protocols.includes('/molt/test/kad/1.0.0') ? true : undefined, 'b identifies a over plaintext')
    // a noise node, on memory and on loopback: plaintext shares no encrypter with it, and has no TCP
    const c = await createOverlay({ system: 'test', profile: 'local', listen: ['/memory/ov-noise-c', '/ip4/127.0.0.1/tcp/0'] })
    nodes.push(c)
    const tcpAddress = c.getMultiaddrs().find(ma => ma.getComponents()[0]?.name === 'ip4')
    const memoryAddress = c.getMultiaddrs().find(ma => ma.getComponents()[0]?.name === 'memory')
    if (tcpAddress == null || memoryAddress == null) throw new Error('c listens on both transports')
    await expect(a.dial(tcpAddress, { signal: AbortSignal.timeout(10_000) })).rejects.toMatchObject({ name: 'NoValidAddressesError' })
    await expect(a.dial(memoryAddress, { signal: AbortSignal.timeout(10_000) })).rejects.toMatchObject({ name: 'EncryptionFailedError' })
    expect(a.getConnections(c.peerId)).toHaveLength(0)
  })
})
