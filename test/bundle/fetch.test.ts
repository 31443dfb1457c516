import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryDatastore } from 'datastore-core'
import { describe, it, expect, afterEach } from 'vitest'
import { handleRequests } from '../../src/overlay/index.ts'
import { eventually } from '../helpers.ts'
import { openStore } from '../../src/state/index.ts'
import { BundleTooLargeError, createBundleService, decodeRequest, encodeReply } from '../../src/bundle/index.ts'
import { bundleNode, connect, overlay, randomFiles, sameFiles, storedBlocks, SYSTEM, type TestNode } from './setup.ts'
import type { MoltLibp2p } from '../../src/overlay/index.ts'
import type { PeerId } from '@libp2p/interface'

const PROTOCOL = `/molt/${SYSTEM}/bundle/1.0.0`

describe('bundle fetch', () => {
  const nodes: TestNode[] = []
  const peers: MoltLibp2p[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
    await Promise.all(peers.splice(0).map(async p => { await p.stop() }))
    await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
  })

  async function make (...args: Parameters<typeof bundleNode>): Promise<TestNode> {
    const node = await bundleNode(...args)
    nodes.push(node)
    return node
  }

  /** A peer that holds nothing: it answers every request with no blocks, and counts them. */
  async function emptyPeer (): Promise<{ peer: MoltLibp2p, asked: () => number }> {
    const peer = await overlay()
    peers.push(peer)
    let asked = 0
    await handleRequests(peer, PROTOCOL, async () => {
      asked++
      return encodeReply({ blocks: [] })
    })
    return { peer, asked: () => asked }
  }

  it('refuses blocks that do not match their CID, reports the peer, stores nothing, and fetches from another provider', async () => {
    const publisher = await make()
    const files = randomFiles(2, 700_000)
    const packed = await publisher.bundles.packFiles(files)

    // a peer that answers every request with wrong bytes
    const liar = await overlay()
    peers.push(liar)
    await handleRequests(liar, PROTOCOL, async (request) => {
      return encodeReply({ blocks: decodeRequest(request).want.map(cid => ({ cid, data: new Uint8Array(64).fill(7) })) })
    })

    const fetcher = await make()
    const rejected: Array<{ peer: PeerId, reason: string }> = []
    const firstRejection = new Promise<void>(resolve => {
      fetcher.bundles.events.addEventListener('bundle:rejected-block', (event) => {
        rejected.push({ peer: event.detail.peer, reason: event.detail.reason })
        resolve()
      })
    })
    await connect(fetcher, liar)
    const fetching = fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    await firstRejection
    expect(rejected[0]?.peer.equals(liar.peerId)).toBe(true)
    // nothing of the bundle was stored from the liar
    expect(await storedBlocks(fetcher.datastore)).toEqual({ blocks: 0, bytes: 0 })
    expect(await fetcher.bundles.list()).toEqual([])

    await connect(fetcher, publisher)
    const result = await fetching
    expect(result.size).toBe(packed.size)
    expect(Object.keys(result.fromPeers)).toEqual([publisher.libp2p.peerId.toString()])
    expect(sameFiles(await fetcher.bundles.files(packed.cid), files)).toBe(true)
  })

  it('stops at the declared size with BundleTooLargeError and stores nothing', async () => {
    const publisher = await make()
    const packed = await publisher.bundles.packFiles(randomFiles(3, 1_000_000))
    const fetcher = await make()
    await connect(fetcher, publisher)
    await expect(fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size - 1 })).rejects.toThrow(BundleTooLargeError)
    expect(await storedBlocks(fetcher.datastore)).toEqual({ blocks: 0, bytes: 0 })
    expect(await fetcher.bundles.has(packed.cid)).toBe(false)
    expect(fetcher.bundles.stats().fetchedBytes).toBeLessThan(packed.size - 1)
    // with the true size it completes
    await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    expect(await fetcher.bundles.has(packed.cid)).toBe(true)
  })

  it('asks a connected peer that is not a provider again only after a discovery interval', async () => {
    const publisher = await make()
    const files = randomFiles(1, 200_000)
    const packed = await publisher.bundles.packFiles(files)

    // a connected peer that holds nothing
    const { peer: empty, asked } = await emptyPeer()

    const fetcher = await make({ lackRetryMs: 50, discoveryIntervalMs: 5000 })
    await connect(fetcher, empty)
    const fetching = fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    await eventually(() => asked() > 0, 'the connected peer is asked')
    // then not again within the discovery interval, not every lackRetryMs (which applies to
    // providers): with every node of a fleet fetching at once, that was hundreds of empty
    // requests a second
    await new Promise(resolve => setTimeout(resolve, 2000))
    expect(asked()).toBe(1)

    await connect(fetcher, publisher)
    const result = await fetching
    expect(Object.keys(result.fromPeers)).toEqual([publisher.libp2p.peerId.toString()])
  })

  it('does not walk the DHT while a known holder delivers, and announces itself after a random delay', async () => {
    const publisher = await make()
    const packed = await publisher.bundles.packFiles(randomFiles(3, 600_000))
    // every query and announcement the fetcher starts, counted on its real DHT service
    const fetcher = await make({ discoveryDelayMs: 0, announceSpreadMs: 1000 })
    const dht = fetcher.libp2p.services.moltDht
    const findProviders = dht.findProviders.bind(dht)
    let queries = 0
    dht.findProviders = (...args) => { queries++; return findProviders(...args) }
    const provide = dht.provide.bind(dht)
    let provides = 0
    dht.provide = (...args) => { provides++; return provide(...args) }

    await connect(fetcher, publisher)
    const result = await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, providers: [publisher.libp2p.peerId] })
    expect(Object.keys(result.fromPeers)).toEqual([publisher.libp2p.peerId.toString()])
    // a holder was known from the start and kept delivering: no query (each touches every node on
    // its path, and a whole fleet querying at once took the testnet's two cores)
    expect(queries).toBe(0)
    // it does announce itself, once, after its random delay
    await eventually(() => provides > 0, 'the fetcher provides the bundle')
    expect(provides).toBe(1)
  })

  it('a node that starts holding a bundle announces it after a random delay, not at once', async () => {
    const publisher = await make()
    const packed = await publisher.bundles.packFiles(randomFiles(2, 40_000))
    const datastore = new MemoryDatastore()
    const first = await bundleNode({}, datastore)
    await connect(first, publisher)
    await first.bundles.fetch(packed.cid, { declaredSize: packed.size })
    await first.stop()
    // the same store, started again: every provide it makes is counted on its real DHT service
    const libp2p = await overlay()
    peers.push(libp2p)
    const dht = libp2p.services.moltDht
    const provide = dht.provide.bind(dht)
    const provided: string[] = []
    dht.provide = (cid, ...rest) => { provided.push(cid.toString()); return provide(cid, ...rest) }
    // a delay of 4 s: long beside one turn of the event loop even on a loaded machine
    const restarted = createBundleService({ libp2p, datastore }, { system: SYSTEM, announceSpreadMs: 8000, random: () => 0.5 })
    await restarted.start()
    try {
      // at once, its provide would have been called within start's own microtasks
      await new Promise(resolve => setImmediate(resolve))
      expect(provided).toEqual([])
      // but it is a holder (maybe the only one): it does announce, after its delay
      await eventually(() => provided.length > 0, 'the restarted node provides the bundle')
      expect(provided).toEqual([packed.cid.toString()])
    } finally {
      await restarted.stop()
    }
  })

  it('a fetcher with more connected peers than `announcers` leaves the announcement to them by chance: announcers / connections', async () => {
    const publisher = await make()
    const packed = await publisher.bundles.packFiles(randomFiles(2, 40_000))
    const others = await Promise.all([emptyPeer(), emptyPeer(), emptyPeer()])
    // one fetcher rolls high, one low; each is connected to the publisher and three more peers
    const fetchers = await Promise.all([0.9, 0.1].map(async roll => await make({ announcers: 1, announceSpreadMs: 1, random: () => roll })))
    for (const fetcher of fetchers) {
      await connect(fetcher, publisher)
      for (const o of others) await connect(fetcher, o.peer)
      expect(fetcher.libp2p.getConnections().length).toBe(4)
      await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, providers: [publisher.libp2p.peerId] })
    }
    const [high, low] = fetchers as [TestNode, TestNode]
    // 0.9 × 4 ≥ 1: declined; 0.1 × 4 < 1: announced
    await eventually(() => high.bundles.stats().providesDeclined === 1 && low.bundles.stats().provides === 1, 'both fetchers made their choice')
    expect(high.bundles.stats().provides).toBe(0)
    expect(low.bundles.stats().providesDeclined).toBe(0)
    // the packer announces whatever its connections: it is the first holder
    expect(publisher.bundles.stats()).toMatchObject({ provides: 1, providesDeclined: 0 })
  })

  it('rejects an `announcers` that is not a positive number, and changes nothing', async () => {
    const libp2p = await overlay()
    peers.push(libp2p)
    for (const announcers of [0, -1, Number.NaN]) {
      expect(() => createBundleService({ libp2p, datastore: new MemoryDatastore() }, { system: SYSTEM, announcers })).toThrow(/announcers: must be a positive number/)
    }
  })

  it('provides again once connected to more peers when its record reached no one: a bundle packed alone reaches the peers that join', async () => {
    const publisher = await make({ reprovideMs: 100 })
    // packed alone: the record reached no peer
    const packed = await publisher.bundles.packFiles(randomFiles(2, 20_000))
    const joiner = await make()
    await connect(joiner, publisher)
    // the joiner's own lookup answers from its provider store first, before any network query
    const holdsRecord = async (): Promise<boolean> => {
      const dht = joiner.libp2p.services.moltDht
      for await (const event of dht.findProviders(packed.cid, { signal: AbortSignal.timeout(5000) })) {
        return event.name === 'PEER_RESPONSE' && event.from.equals(joiner.libp2p.peerId) &&
          event.providers.some(p => p.id.equals(publisher.libp2p.peerId))
      }
      return false
    }
    await eventually(holdsRecord, 'the joiner holds the publisher\'s provider record')
  })

  it('a busy holder refers the asker to the peers it served the wanted blocks, which it dials and fetches from', async () => {
    const publisher = await make({ maxServing: 1 })
    const files = randomFiles(2, 300_000)
    const packed = await publisher.bundles.packFiles(files)
    // the publisher serves `served` the whole bundle
    const served = await make()
    await connect(served, publisher)
    await served.bundles.fetch(packed.cid, { declaredSize: packed.size })
    // a peer that opens a request and never sends it holds the publisher's one serving slot
    const hog = await overlay()
    peers.push(hog)
    await connect(hog, publisher)
    const held = await hog.dialProtocol(publisher.libp2p.peerId, PROTOCOL)
    // the fetcher is connected to the publisher only and walks no DHT within the test: the
    // publisher's referral is its only way to `served`
    const fetcher = await make({ discoveryDelayMs: 60_000 })
    const dht = fetcher.libp2p.services.moltDht
    const findProviders = dht.findProviders.bind(dht)
    let queries = 0
    dht.findProviders = (...args) => { queries++; return findProviders(...args) }
    await connect(fetcher, publisher)
    expect(fetcher.libp2p.getConnections(served.libp2p.peerId)).toHaveLength(0)
    const result = await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    expect(Object.keys(result.fromPeers)).toEqual([served.libp2p.peerId.toString()])
    expect(sameFiles(await fetcher.bundles.files(packed.cid), files)).toBe(true)
    expect(queries).toBe(0)
    expect(fetcher.bundles.stats().referredPeers).toBe(1)
    held.abort(new Error('done'))
  })

  it('moves off a provider that accepts the request and never answers', async () => {
    const publisher = await make()
    const files = randomFiles(2, 600_000)
    const packed = await publisher.bundles.packFiles(files)

    const staller = await overlay()
    peers.push(staller)
    let stalled!: () => void
    const reached = new Promise<void>(resolve => { stalled = resolve })
    await staller.handle(PROTOCOL, () => { stalled() /* accept the stream, never answer */ })

    const fetcher = await make({ requestTimeoutMs: 500 })
    await connect(fetcher, staller)
    const fetching = fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    await reached
    await connect(fetcher, publisher)
    const result = await fetching
    expect(result.fromPeers[staller.peerId.toString()]).toBeUndefined()
    expect(result.fromPeers[publisher.libp2p.peerId.toString()]).toBe(result.fetchedBytes)
    expect(sameFiles(await fetcher.bundles.files(packed.cid), files)).toBe(true)
  })

  it('resumes after a restart without fetching stored blocks again', async () => {
    const publisher = await make()
    const files = randomFiles(2, 2_000_000)
    const packed = await publisher.bundles.packFiles(files)

    const dir = await mkdtemp(join(tmpdir(), 'molt-bundle-resume-'))
    dirs.push(dir)
    let store = await openStore({ path: dir })
    let fetcher = await bundleNode({ concurrency: 1, batchBlocks: 1 }, store.namespace('bundles'))
    await connect(fetcher, publisher)
    const controller = new AbortController()
    fetcher.bundles.events.addEventListener('bundle:progress', (event) => {
      if (event.detail.bytes > 300_000) controller.abort(new Error('simulated crash'))
    })
    await expect(fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, signal: controller.signal })).rejects.toThrow('simulated crash')
    await fetcher.stop()
    const before = await storedBlocks(store.namespace('bundles'))
    await store.close()
    const totalBlocks = (await storedBlocks(publisher.datastore)).blocks
    expect(before.blocks).toBeGreaterThan(2)
    expect(before.blocks).toBeLessThan(totalBlocks)

    // restart on the same data directory
    store = await openStore({ path: dir })
    fetcher = await bundleNode({}, store.namespace('bundles'))
    try {
      await connect(fetcher, publisher)
      const result = await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
      expect(result.fetchedBlocks).toBe(totalBlocks - before.blocks)
      expect(result.fetchedBytes).toBe(packed.size - before.bytes)
      expect(sameFiles(await fetcher.bundles.files(packed.cid), files)).toBe(true)
    } finally {
      await fetcher.stop()
      await store.close()
    }
  })

  it('shares one transfer between concurrent fetches and returns at once when the bundle is held', async () => {
    const publisher = await make()
    const packed = await publisher.bundles.packFiles(randomFiles(2, 500_000))
    const fetcher = await make()
    await connect(fetcher, publisher)
    const [a, b] = await Promise.all([
      fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size }),
      fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    ])
    expect(a).toBe(b)
    expect(fetcher.bundles.stats().fetchedBytes).toBe(packed.size)
    const again = await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    expect(again.fetchedBytes).toBe(0)
  })

  it('adds the holders a caller names to a fetch of the same bundle already running', async () => {
    // a holder the DHT does not name and the fetcher is not connected to: only a name reaches it
    const publisher = await make({ provide: false })
    const packed = await publisher.bundles.packFiles(randomFiles(2, 300_000))
    const fetcher = await make()
    await fetcher.libp2p.peerStore.merge(publisher.libp2p.peerId, { multiaddrs: publisher.libp2p.getMultiaddrs() })
    const first = fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size })
    const joined = fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, providers: [publisher.libp2p.peerId], signal: AbortSignal.timeout(30_000) })
    const [a, b] = await Promise.all([first, joined])
    expect(a).toBe(b)
    expect(Object.keys(a.fromPeers)).toEqual([publisher.libp2p.peerId.toString()])
  })

  it('stops waiting for a named holder that only ever lacks the bundle: asks the peers it is connected to', async () => {
    // what a stale provider record or a hint that never gets the bundle looks like: a peer named
    // as a holder that answers every request with no blocks
    const { peer: stale, asked } = await emptyPeer()
    // the real holder: not in the DHT, connected only once the fetch has started
    const holder = await make({ provide: false })
    const files = randomFiles(2, 200_000)
    const packed = await holder.bundles.packFiles(files)
    const fetcher = await make({ discoveryIntervalMs: 500 })
    await connect(fetcher, stale)
    const fetching = fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, providers: [stale.peerId], signal: AbortSignal.timeout(30_000) })
    await eventually(() => asked() > 0, 'the named holder is asked')
    await connect(fetcher, holder)
    const result = await fetching
    expect(Object.keys(result.fromPeers)).toEqual([holder.libp2p.peerId.toString()])
    expect(sameFiles(await fetcher.bundles.files(packed.cid), files)).toBe(true)
  })

  it('waitForHolder resolves only once a connected peer holds the whole bundle; partial holders, peers without the protocol and garbage replies do not count', async () => {
    const publisher = await make({ provide: false })
    const files = randomFiles(3, 600_000)
    const packed = await publisher.bundles.packFiles(files)
    // a peer that never registered the block exchange, and one that answers with garbage
    const bare = await overlay()
    peers.push(bare)
    const garbage = await overlay()
    peers.push(garbage)
    let questions = 0
    await handleRequests(garbage, PROTOCOL, async (request) => {
      if (decodeRequest(request).holds.length > 0) questions++
      return new Uint8Array([0xff, 0x00, 0x13])
    })
    // a fetcher stopped after the root and file nodes: a partial holder
    const fetcher = await make({ provide: false })
    for (const peer of [bare, garbage, fetcher]) await connect(publisher, peer)
    const stopped = new AbortController()
    fetcher.bundles.events.addEventListener('bundle:progress', () => { stopped.abort(new Error('stopped after the file nodes')) }, { once: true })
    await expect(fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, signal: stopped.signal })).rejects.toThrow('stopped after the file nodes')
    expect((await fetcher.bundles.list()).map(r => [r.cid.toString(), r.state])).toEqual([[packed.cid.toString(), 'partial']])

    let holder: PeerId | undefined
    const waiting = publisher.bundles.waitForHolder(packed.cid, { intervalMs: 50, signal: AbortSignal.timeout(60_000) })
    void waiting.then(p => { holder = p }, () => {})
    await eventually(() => questions >= 3, 'three rounds of questions')
    expect(holder).toBeUndefined()

    await fetcher.bundles.fetch(packed.cid, { declaredSize: packed.size, providers: [publisher.libp2p.peerId] })
    expect((await waiting).equals(fetcher.libp2p.peerId)).toBe(true)
  })

  it('waitForHolder rejects with the signal\'s reason, and refuses a bad interval with InvalidOptionError', async () => {
    const publisher = await make({ provide: false })
    const packed = await publisher.bundles.packFiles(randomFiles(1, 1000))
    // no peer at all: it waits until told to stop
    await expect(publisher.bundles.waitForHolder(packed.cid, { intervalMs: 20, signal: AbortSignal.timeout(300) })).rejects.toMatchObject({ name: 'TimeoutError' })
    await expect(publisher.bundles.waitForHolder(packed.cid, { intervalMs: -1 })).rejects.toMatchObject({ name: 'InvalidOptionError' })
  })
})
