import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { describe, it, expect, afterEach } from 'vitest'
import { genesisManifest } from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { buildChain, makeGenesis, makeKeys } from '../fixtures.ts'
import { startNetwork, startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { PeerId } from '@libp2p/interface'

describe('manifest propagation across real nodes', () => {
  const nodes: MoltNode[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await stopAll(nodes)
    await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
  })

  it('a manifest injected through a random one of 20 nodes is accepted by all', async () => {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    nodes.push(...await startNetwork(genesis, 20, 3))
    const [m1] = await buildChain(genesis, keys.release.slice(0, 2), 1)
    const accepted = new Set<string>()
    for (const node of nodes) {
      node.addEventListener('manifest:accepted', () => { accepted.add(node.peerId.toString()) })
    }
    const injector = nodes[Math.floor(Math.random() * nodes.length)]!
    const result = await injector.publish(m1!)
    expect(result.verdict).toBe('accepted')
    await eventually(() => nodes.every(n => n.head().cid.equals(m1!.cid)), 'all 20 nodes at version 1', 30_000)
    expect(accepted.size).toBe(20)
  })

  it('a node down during the publish, a late joiner and the far side of a healed partition all catch up, intermediate versions included', async () => {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    const [m1, m2, m3] = await buildChain(genesis, keys.release.slice(0, 2), 3)

    // the partition: a gater that refuses peers on the other side while `cut` is set
    let cut = false
    const sideB = new Set<string>()
    const gater = (self: () => PeerId | undefined) => ({
      denyDialPeer: async (peer: PeerId) => cut && sideB.has(peer.toString()) !== sideB.has(self()?.toString() ?? ''),
      denyInboundEncryptedConnection: async (peer: PeerId) => cut && sideB.has(peer.toString()) !== sideB.has(self()?.toString() ?? '')
    })
    const gated = async (): Promise<MoltNode> => {
      let me: MoltNode | undefined
      const node = await startNode(genesis, { connectionGater: gater(() => me?.peerId) })
      me = node
      return node
    }
    for (let i = 0; i < 6; i++) {
      const node = await gated()
      if (i > 0) await node.libp2p.dial(nodes[i - 1]!.libp2p.getMultiaddrs())
      nodes.push(node)
    }
    const dataDir = await mkdtemp(join(tmpdir(), 'molt-test-'))
    dirs.push(dataDir)
    let sleeper = await startNode(genesis, { dataDir })
    await sleeper.libp2p.dial(nodes[0]!.libp2p.getMultiaddrs())
    const sleeperId = sleeper.peerId.toString()
    await sleeper.stop()

    // cut the ring: nodes 4 and 5 on one side
    for (const n of nodes.slice(4)) sideB.add(n.peerId.toString())
    cut = true
    await Promise.all(nodes.slice(0, 4).map(async a => { await Promise.all(nodes.slice(4).map(async b => { await a.libp2p.hangUp(b.peerId) })) }))

    // the cut holds: no connection across it, and a dial across it is refused
    expect(nodes[4]!.libp2p.getConnections(nodes[3]!.peerId)).toHaveLength(0)
    await expect(nodes[4]!.libp2p.dial(nodes[3]!.libp2p.getMultiaddrs())).rejects.toThrow()

    await nodes[0]!.publish(m1!)
    await nodes[1]!.publish(m2!)
    await eventually(() => nodes.slice(0, 4).every(n => n.head().body.version === 2), 'side A at version 2')
    expect(nodes.slice(4).every(n => n.head().body.version === 0)).toBe(true)

    // the node that was down restarts from its data dir and catches up
    sleeper = await startNode(genesis, { dataDir, bootstrap: nodes[2]!.libp2p.getMultiaddrs().map(String) })
    nodes.push(sleeper)
    expect(sleeper.peerId.toString()).toBe(sleeperId)
    await eventually(() => sleeper.head().body.version === 2, 'the restarted node at version 2')
    expect(sleeper.chain.get(1)?.cid.toString()).toBe(m1!.cid.toString())

    // a node that joins afterwards catches up, version 1 included
    const late = await startNode(genesis, { bootstrap: nodes[3]!.libp2p.getMultiaddrs().map(String) })
    nodes.push(late)
    await eventually(() => late.head().body.version === 2 && late.chain.get(1) != null, 'the late joiner at version 2')

    await nodes[0]!.publish(m3!)
    await eventually(() => nodes.slice(0, 4).every(n => n.head().body.version === 3), 'side A at version 3')

    // heal: side B learns versions 1..3 through head exchange on the new connection
    cut = false
    await nodes[5]!.libp2p.dial(nodes[0]!.libp2p.getMultiaddrs())
    await eventually(() => nodes.every(n => n.head().body.version === 3), 'every node at version 3 after the heal')
    for (const n of nodes) {
      expect(n.chain.get(1)?.cid.toString()).toBe(m1!.cid.toString())
      expect(n.chain.get(2)?.cid.toString()).toBe(m2!.cid.toString())
    }
  })

  it('two validly signed bodies at one version halt every node, with the proof in the status', async () => {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    nodes.push(...await startNetwork(genesis, 6, 2))
    const g = await genesisManifest(genesis)
    const [a] = await buildChain(genesis, keys.release.slice(0, 2), 1)
    const { nextManifest } = await import('../fixtures.ts')
    const b = await nextManifest(g, keys.release.slice(1, 3), { createdAt: 7 })
    await nodes[0]!.publish(a!)
    await eventually(() => nodes.every(n => n.head().body.version === 1), 'all at version 1')
    const verdict = await nodes[5]!.publish(b)
    expect(verdict.verdict).toBe('equivocation')
    await eventually(() => nodes.every(n => n.status().halted != null), 'every node halted')
    const halted = nodes[2]!.status().halted!
    expect([halted.a, halted.b].sort()).toEqual([a!.cid.toString(), b.cid.toString()].sort())
    expect(peerIdFromString(nodes[2]!.status().peerId).equals(nodes[2]!.peerId)).toBe(true)
  })
})
