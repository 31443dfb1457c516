import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { memory } from '@libp2p/memory'
import { createLibp2p } from 'libp2p'
import { describe, it, expect, afterEach } from 'vitest'
import { InvalidOptionError, PublicAddressRefusedError, moltServices, type MoltServices } from '../../src/overlay/index.ts'
import { createMoltNode, type MoltNode } from '../../src/node/index.ts'
import { GenesisConfigError } from '../../src/manifest/index.ts'
import { eventually, memoryAddress } from '../helpers.ts'
import { buildChain, makeGenesis, makeKeys } from '../fixtures.ts'
import { startNode, stopAll } from '../nodes.ts'

describe('createMoltNode', () => {
  const nodes: MoltNode[] = []
  afterEach(async () => { await stopAll(nodes) })

  it('refuses bad options with typed errors and starts nothing', async () => {
    const genesis = await makeGenesis(await makeKeys())
    await expect(createMoltNode(undefined as never)).rejects.toThrow(InvalidOptionError)
    await expect(createMoltNode({} as never)).rejects.toThrow(InvalidOptionError)
    await expect(createMoltNode({ genesis, bootstrap: ['nonsense'] })).rejects.toThrow(InvalidOptionError)
    await expect(createMoltNode({ genesis, bootstrap: 'x' as never })).rejects.toThrow(InvalidOptionError)
    await expect(createMoltNode({ genesis, profile: 'local', bootstrap: ['/ip4/8.8.8.8/tcp/4001'] })).rejects.toThrow(PublicAddressRefusedError)
    await expect(createMoltNode({ genesis, profile: 'local', listen: ['/ip4/0.0.0.0/tcp/0'] })).rejects.toThrow(PublicAddressRefusedError)
    await expect(createMoltNode({ genesis: { ...genesis, system: 'Not A Name' } })).rejects.toThrow(InvalidOptionError)
    await expect(createMoltNode({ genesis: { ...genesis, policy: { ...genesis.policy, release: { keys: [], threshold: 1 } } }, profile: 'local' }))
      .rejects.toThrow(GenesisConfigError)
  })

  it('runs on the user\'s own libp2p node and leaves it running at stop', async () => {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    const libp2p = await createLibp2p<MoltServices>({
      addresses: { listen: [memoryAddress()] },
      transports: [memory()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      services: moltServices({ system: genesis.system, profile: 'local' })
    })
    try {
      const embedded = await createMoltNode({ genesis, libp2p })
      const other = await startNode(genesis)
      nodes.push(other)
      await other.libp2p.dial(libp2p.getMultiaddrs())
      const [m1] = await buildChain(genesis, keys.release.slice(0, 2), 1)
      await other.publish(m1!)
      await eventually(() => embedded.head().body.version === 1, 'the embedded node accepts version 1')
      await embedded.stop()
      expect(libp2p.status).toBe('started')
    } finally {
      await libp2p.stop()
    }
  })
})
