/**
 * Two real libp2p nodes, each with an upgrade layer whose `invoke` is its host's: a recursive
 * A→B→A→B→A call chain completes, because an atomic section is never held across a remote call.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { peerIdFromString } from '@libp2p/peer-id'
import { createOverlay, type MoltLibp2p } from '../../src/overlay/index.ts'
import { createUpgradeLayer, type UpgradeLayer } from '../../src/layer/index.ts'
import { openStore, type MoltStore } from '../../src/state/index.ts'
import { createHost, type AppHost, type Value } from '../../src/host/index.ts'
import { eventually, memoryAddress } from '../helpers.ts'
import { app, call, FAST } from './setup.ts'

const SYSTEM = 'htest'

interface Node {
  libp2p: MoltLibp2p
  layer: UpgradeLayer
  host: AppHost
  store: MoltStore
  id: string
  stop(): Promise<void>
}

async function node (): Promise<Node> {
  const libp2p = await createOverlay({ system: SYSTEM, profile: 'local', listen: [memoryAddress()] })
  const store = await openStore({ memory: true })
  let layer: UpgradeLayer | undefined
  const host = createHost({
    store,
    self: { peerId: libp2p.peerId.toString() },
    peers: () => libp2p.getConnections().map(c => c.remotePeer.toString()),
    call: async (peer, method, args, options) => await layer!.call(peerIdFromString(peer), method, args, {
      version: options.version,
      class: options.class,
      signal: options.signal,
      ...(options.deadlineMs != null ? { deadlineMs: options.deadlineMs } : {})
    })
  }, { ...FAST, peersRefreshMs: 100 })
  layer = createUpgradeLayer({ libp2p }, { system: SYSTEM, state: { version: 1, class: 'counter' }, invoke: host.invoke })
  await layer.start()
  await host.load({ current: { class: 'counter', version: 1, bundle: app('counter-v1') } })
  const l = layer
  return {
    libp2p,
    layer: l,
    host,
    store,
    id: libp2p.peerId.toString(),
    async stop () {
      await host.stop()
      await l.stop()
      await libp2p.stop()
      await store.close()
    }
  }
}

const nodes: Node[] = []
afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map(async n => { await n.stop() }))
})

describe('host behind the upgrade layer', () => {
  it('completes recursive A→B→A call chains without deadlock, concurrently from both ends', async () => {
    const a = await node()
    const b = await node()
    nodes.push(a, b)
    await a.libp2p.dial(b.libp2p.getMultiaddrs())
    const trail = await call(a.host, 'bounce', [[b.id, a.id, b.id, a.id], 0])
    expect(trail).toEqual([a.id, b.id, a.id, b.id, a.id])
    // both ends at once: each chain re-enters the other node while that node's own chain waits
    const [fromA, fromB] = await Promise.all([
      call(a.host, 'bounce', [[b.id, a.id], 0]),
      call(b.host, 'bounce', [[a.id, b.id], 0])
    ])
    expect(fromA).toEqual([a.id, b.id, a.id])
    expect(fromB).toEqual([b.id, a.id, b.id])
    // every visit incremented the visited node's counter exactly once, in a serial order
    expect(await call(a.host, 'get')).toBe(3 + 2 + 1)
    expect(await call(b.host, 'get')).toBe(2 + 1 + 2)
    // over the wire: a remote caller reaches the host through the layer, app errors typed
    expect(await b.layer.call(a.libp2p.peerId, 'echo', ['x', 1])).toEqual(['x', 1])
    await expect(b.layer.call(a.libp2p.peerId, 'fail', [])).rejects.toMatchObject({ name: 'RemoteError', remoteName: 'TypeError' })
    // the app's peer list
    await eventually(async () => ((await call(a.host, 'peers')) as Value[]).includes(b.id), 'a sees b')
  })
})
