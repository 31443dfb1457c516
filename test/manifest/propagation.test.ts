/**
 * The announce topic's validator and catch-up against a misbehaving peer. The honest nodes are
 * real libp2p nodes running molt's chain and propagation; the attacker is a real libp2p node with
 * molt's services that publishes whatever bytes it likes.
 */
import * as cbor from '@ipld/dag-cbor'
import { MemoryDatastore } from 'datastore-core'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PeerId } from '@libp2p/interface'
import { describe, it, expect, afterEach } from 'vitest'
import {
  announceTopic, createControl, createManifestPropagation, encodeSignedControl, signControl, type SignedControl, encodeAnnounce, encodeHead, encodeSignedManifest, genesisManifest,
  openControlLog, openManifestChain, type ManifestPropagation, type SignedManifest
} from '../../src/manifest/index.ts'
import { createOverlay, handleRequests, protocolId, sendRequest, type MoltLibp2p } from '../../src/overlay/index.ts'
import { eventually, memoryAddress } from '../helpers.ts'
import { buildChain, makeGenesis, makeKeys, nextManifest, nonCanonicalBody, policyOf } from '../fixtures.ts'
import type { GenesisConfig } from '../../src/manifest/index.ts'

interface Honest {
  libp2p: MoltLibp2p
  propagation: ManifestPropagation
  rejected: Array<{ peer: string, reason: string }>
  head: () => number
}

async function honest (genesis: GenesisConfig, refuse?: PeerId): Promise<Honest> {
  const deny = async (peer: PeerId): Promise<boolean> => refuse?.equals(peer) === true
  const libp2p = await createOverlay({
    system: genesis.system,
    profile: 'local',
    listen: [memoryAddress()],
    ...(refuse != null ? { connectionGater: { denyDialPeer: deny, denyInboundEncryptedConnection: deny } } : {})
  })
  const chain = await openManifestChain({ datastore: new MemoryDatastore(), genesis: await genesisManifest(genesis) })
  const controls = await openControlLog({ datastore: new MemoryDatastore(), system: genesis.system })
  const propagation = createManifestPropagation({ libp2p, chain, controls }, { system: genesis.system })
  const rejected: Honest['rejected'] = []
  propagation.events.addEventListener('manifest:rejected', (e) => { rejected.push({ peer: e.detail.peer.toString(), reason: e.detail.reason }) })
  await propagation.start()
  return { libp2p, propagation, rejected, head: () => chain.head().body.version }
}

describe('announce-topic validator and catch-up', () => {
  const stops: Array<() => Promise<void>> = []
  afterEach(async () => {
    await Promise.allSettled(stops.splice(0).map(async s => { await s() }))
  })

  /**
   * attacker — B — C in a line, all subscribed to the topic with meshes formed. C refuses the
   * attacker: its DHT could otherwise find C through B and connect to it, and then its floods
   * would reach C directly, not through B.
   */
  async function line () {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    const attacker = await createOverlay({ system: genesis.system, profile: 'local', listen: [memoryAddress()] })
    stops.push(async () => { await attacker.stop() })
    const b = await honest(genesis)
    const c = await honest(genesis, attacker.peerId)
    stops.push(async () => { await b.propagation.stop(); await b.libp2p.stop() })
    stops.push(async () => { await c.propagation.stop(); await c.libp2p.stop() })
    const topic = announceTopic(genesis.system)
    attacker.services.pubsub.subscribe(topic)
    await attacker.dial(b.libp2p.getMultiaddrs())
    await b.libp2p.dial(c.libp2p.getMultiaddrs())
    // C records everything gossip delivers to it
    const delivered: Uint8Array[] = []
    c.libp2p.services.pubsub.addEventListener('message', (e) => { delivered.push(e.detail.data) })
    await eventually(() => attacker.services.pubsub.getSubscribers(topic).length > 0 && b.libp2p.services.pubsub.getSubscribers(topic).length > 1 && c.libp2p.services.pubsub.getSubscribers(topic).length > 0, 'subscriptions known')
    return { keys, genesis, attacker, b, c, topic, delivered }
  }

  it('rejects each invalid message: not stored, not forwarded, logged once with the sending peer', async () => {
    const { keys, genesis, attacker, b, c, topic, delivered } = await line()
    const g = await genesisManifest(genesis)
    const good = (await buildChain(genesis, keys.release.slice(0, 2), 1))[0]!
    const stranger = await generateKeyPair('Ed25519')
    const once = await nextManifest(g, keys.release.slice(0, 1), { createdAt: 5 })
    const other = await makeKeys()
    const cases: Array<[string, Uint8Array]> = []
    const wrap = (m: SignedManifest): Uint8Array => encodeAnnounce({ type: 'manifest', manifest: encodeSignedManifest(m) })
    cases.push(['BadSignatureError', wrap({ ...good, signatures: good.signatures.map((s, i) => i === 1 ? { ...s, signature: s.signature.map(x => x ^ 0xff) } : s) })])
    cases.push(['UnknownKeyError', wrap(await nextManifest(g, [stranger, stranger], { createdAt: 3 }))])
    cases.push(['BelowThresholdError', wrap(await nextManifest(g, keys.release.slice(0, 1), { createdAt: 4 }))])
    cases.push(['BelowThresholdError', wrap({ ...once, signatures: [once.signatures[0]!, once.signatures[0]!] })])
    cases.push(['PolicyChangeRefusedError', wrap(await nextManifest(g, keys.release, { createdAt: 6, policy: policyOf(other) }))])
    cases.push(['PolicyChangeRefusedError', wrap(await nextManifest(g, [...keys.release, ...keys.root], { createdAt: 8, policy: policyOf(other) }))])
    cases.push(['BrokenChainError', wrap(await nextManifest(good, keys.release.slice(0, 2), { version: 1, previous: good.cid, createdAt: 9 }))])
    cases.push(['NonCanonicalEncodingError', encodeAnnounce({ type: 'manifest', manifest: cbor.encode({ b: nonCanonicalBody(good), s: good.signatures.map(s => ({ k: s.publicKey, s: s.signature })) }) })])
    cases.push(['ManifestDecodeError', encodeAnnounce({ type: 'manifest', manifest: cbor.encode({ b: Buffer.from(good.bodyBytes).reverse(), s: [] }) })])
    cases.push(['ManifestTooLargeError', encodeAnnounce({ type: 'manifest', manifest: new Uint8Array(70 * 1024) })])
    cases.push(['ManifestTooLargeError', new Uint8Array(200 * 1024).fill(7)])
    cases.push(['PropagationDecodeError', new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])])
    // control messages are judged exactly like manifests
    const abort = await createControl({ system: genesis.system, seq: 1, scope: 1, action: { type: 'abort' }, createdAt: 1 })
    const wrapControl = (c: SignedControl): Uint8Array => encodeAnnounce({ type: 'control', control: encodeSignedControl(c) })
    cases.push(['UnknownKeyError', wrapControl(await signControl(abort, stranger))])
    cases.push(['BelowThresholdError', wrapControl(await signControl(abort, keys.release[0]!))])
    cases.push(['ManifestDecodeError', encodeAnnounce({ type: 'control', control: cbor.encode({ b: cbor.encode({ seq: 1 }), s: [] }) })])

    for (const [reason, bytes] of cases) {
      const before = b.rejected.length
      await attacker.services.pubsub.publish(topic, bytes)
      await eventually(() => b.rejected.length > before, `B rejects ${reason}`)
      expect(b.rejected.at(-1)).toEqual({ peer: attacker.peerId.toString(), reason })
      // the same bytes again: gossip dedupes them or the validator logs nothing new
      await attacker.services.pubsub.publish(topic, bytes).catch(() => {})
    }
    expect(b.head()).toBe(0)

    // a valid manifest published last arrives at C; nothing invalid did before it
    await attacker.services.pubsub.publish(topic, wrap(good))
    await eventually(() => c.head() === 1, 'C accepts the valid manifest relayed by B')
    expect(delivered).toHaveLength(1)
    expect(b.rejected).toHaveLength(cases.length)
    expect(c.rejected).toHaveLength(0)

    // a replay of the accepted version is ignored and not forwarded
    const replay = wrap({ ...good, signatures: [...good.signatures].reverse() })
    await attacker.services.pubsub.publish(topic, replay)
    await eventually(() => b.rejected.some(r => r.reason === 'ReplayedManifestError'), 'B logs the replay')
    expect(delivered).toHaveLength(1)
  })

  it('a flood of fake higher-version hints stays within the pull rate limit', async () => {
    const { genesis, attacker, b } = await line()
    let pulls = 0
    await handleRequests(attacker, protocolId(genesis.system, 'manifests'), async () => {
      pulls++
      return cbor.encode({ manifests: [] })
    })
    const g = await genesisManifest(genesis)
    for (let i = 0; i < 40; i++) {
      await sendRequest(attacker, b.libp2p.peerId, protocolId(genesis.system, 'head'), encodeHead({ version: 1_000_000 + i, cid: g.cid, control: 0 }))
      b.propagation.hint(attacker.peerId, 2_000_000 + i)
    }
    await eventually(() => pulls > 0, 'B pulls at least once')
    // the default is 6 pulls per peer per minute
    await new Promise(resolve => setTimeout(resolve, 500))
    expect(pulls).toBeLessThanOrEqual(6)
    expect(b.head()).toBe(0)
  })
})
