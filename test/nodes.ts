/**
 * Starting and stopping real molt nodes for integration tests (memory transport, local profile).
 */
import { createMoltNode, type MoltNode, type MoltNodeOptions } from '../src/node/index.ts'
import { memoryAddress } from './helpers.ts'
import type { GenesisConfig } from '../src/manifest/index.ts'


/** Starts one local node on the memory transport. */
export async function startNode (genesis: GenesisConfig, options: Partial<MoltNodeOptions> = {}): Promise<MoltNode> {
  return await createMoltNode({
    genesis,
    profile: 'local',
    listen: [memoryAddress()],
    fetchBundles: false,
    ...options
  })
}

/**
 * Starts `n` nodes; node i dials up to `degree` earlier nodes (i-1 and a spread of others), so the
 * overlay is connected but sparse, as a real one is.
 */
export async function startNetwork (genesis: GenesisConfig, n: number, degree = 3, options: Partial<MoltNodeOptions> = {}): Promise<MoltNode[]> {
  const nodes: MoltNode[] = []
  for (let i = 0; i < n; i++) {
    const node = await startNode(genesis, options)
    const targets = new Set<number>()
    for (let d = 1; targets.size < Math.min(degree, i); d++) {
      targets.add((i - d * d) >= 0 ? i - d * d : (i * 7 + d) % i)
    }
    await Promise.all([...targets].map(async t => { await node.libp2p.dial(nodes[t]!.libp2p.getMultiaddrs()) }))
    nodes.push(node)
  }
  return nodes
}

/** Stops every node, whatever state each is in. */
export async function stopAll (nodes: MoltNode[]): Promise<void> {
  await Promise.allSettled(nodes.splice(0).map(async n => { await n.stop() }))
}

/**
 * Connects two nodes. A dial by address can lose a race with the fleet view's pull of the same
 * peer by id (libp2p merges the two dials, and the pull's has no address yet: NoValidAddresses),
 * so a failed dial is tried again.
 */
export async function connectNodes (from: MoltNode, to: MoltNode): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await from.libp2p.dial(to.libp2p.getMultiaddrs())
      return
    } catch (err) {
      if (attempt >= 5) throw err
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
}
