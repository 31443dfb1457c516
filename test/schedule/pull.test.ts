/**
 * A fleet view's direct pull of a counted peer on two real nodes (memory transport): the same
 * record again refreshes the entry, a newer one replaces it, and a reply whose signature differs
 * in one byte is refused (`status:rejected`) and changes nothing.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { afterEach, describe, expect, it } from 'vitest'
import { createOverlay, createRequestSessions, type MoltLibp2p } from '../../src/overlay/index.ts'
import { createFleetView, decodeSignedStatus, encodeSignedStatus, MAX_STATUS_BYTES, signStatus, type NetworkFleetView } from '../../src/schedule/index.ts'
import type { PrivateKey } from '@libp2p/interface'

const SYSTEM = 'pulls'
let counter = 0

async function member (group: string, replicas: string[] = [], now?: () => number): Promise<{ libp2p: MoltLibp2p, view: NetworkFleetView, privateKey: PrivateKey }> {
  const privateKey = await generateKeyPair('Ed25519')
  const libp2p = await createOverlay({ system: SYSTEM, profile: 'local', privateKey, listen: [`/memory/pull-test-${process.pid}-${counter++}`] })
  // a long period: every pull in these tests is one the test makes
  const view = createFleetView({ libp2p, privateKey }, { system: SYSTEM, class: 'app', tags: { group }, replicas, announceMs: 600_000, ...(now != null ? { now } : {}) })
  return { libp2p, view, privateKey }
}

describe('fleet view pulls', () => {
  const nodes: MoltLibp2p[] = []
  const views: NetworkFleetView[] = []
  afterEach(async () => {
    await Promise.allSettled(views.splice(0).map(async v => { await v.stop() }))
    await Promise.allSettled(nodes.splice(0).map(async n => { await n.stop() }))
  })

  it('refreshes an unchanged record, takes a changed one, and refuses one whose signature differs', async () => {
    const b = await member('gb')
    nodes.push(b.libp2p)
    views.push(b.view)
    await b.view.start()
    const peerB = b.libp2p.peerId.toString()
    let clock = 1_000_000
    const a = await member('ga', [peerB], () => clock)
    nodes.push(a.libp2p)
    views.push(a.view)
    await a.view.start()
    await a.libp2p.dial(b.libp2p.getMultiaddrs())
    const rejected: string[] = []
    a.view.events.addEventListener('status:rejected', (e) => { rejected.push(e.detail.reason) })

    const first = await a.view.pull(peerB)
    expect(first).toMatchObject({ peer: peerB, phase: 'running', version: 0 })
    const heard = a.view.get(peerB)?.heardAt

    // the same record again: the entry is refreshed
    clock += 5_000
    const again = await a.view.pull(peerB)
    expect(again?.seq).toBe(first?.seq)
    expect(a.view.get(peerB)?.heardAt).toBe((heard ?? 0) + 5_000)

    // a new record is taken, not hidden behind the last one's bytes
    await b.view.update({ phase: 'waiting', target: 1 })
    const changed = await a.view.pull(peerB)
    expect(changed).toMatchObject({ phase: 'waiting', target: 1 })
    expect(changed?.seq).toBeGreaterThan(first?.seq ?? Infinity)

    // b now answers with its last record, one byte of the signature flipped
    const signed = await signStatus(SYSTEM, b.view.own(), b.privateKey)
    expect((await decodeSignedStatus(encodeSignedStatus(signed), SYSTEM)).record).toEqual(b.view.own())
    const forged = encodeSignedStatus({ ...signed, signature: signed.signature.map((x, i) => i === 0 ? x ^ 1 : x) })
    await b.view.stop()
    const liar = createRequestSessions({ libp2p: b.libp2p }, { protocol: `/molt/${SYSTEM}/status/2.0.0`, handler: async () => forged, maxRequestBytes: 16, maxResponseBytes: MAX_STATUS_BYTES })
    await liar.start()
    try {
      const before = a.view.get(peerB)
      await expect(a.view.pull(peerB)).rejects.toMatchObject({ name: 'BadStatusSignatureError' })
      expect(rejected).toEqual(['BadStatusSignatureError'])
      expect(a.view.get(peerB)).toEqual(before)
    } finally {
      await liar.stop()
    }
  })
})
