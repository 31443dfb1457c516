import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import * as cbor from '@ipld/dag-cbor'
import { encode as cborgEncode } from 'cborg'
import { MemoryDatastore } from 'datastore-core'
import { describe, it, expect } from 'vitest'
import {
  BadSignatureError, BelowThresholdError, BrokenChainError, GenesisMismatchError, ManifestDecodeError,
  ManifestTooLargeError, NonCanonicalEncodingError, PolicyChangeRefusedError, UnknownKeyError, WrongSystemError,
  createManifest, decodeSignedManifest, encodeSignedManifest, genesisManifest, genesisFromJSON, genesisToJSON,
  openManifestChain, signManifest, MAX_MANIFEST_BYTES
} from '../../src/manifest/index.ts'
import { buildChain, makeGenesis, makeKeys, nextManifest, nonCanonicalBody, policyOf } from '../fixtures.ts'

async function setup () {
  const keys = await makeKeys()
  const config = await makeGenesis(keys)
  const genesis = await genesisManifest(config)
  const datastore = new MemoryDatastore()
  const chain = await openManifestChain({ datastore, genesis })
  return { keys, config, genesis, datastore, chain }
}

describe('manifest codec', () => {
  it('round-trips a signed manifest with the same body CID', async () => {
    const { keys, genesis } = await setup()
    const m = await nextManifest(genesis, keys.release.slice(0, 2))
    const back = await decodeSignedManifest(encodeSignedManifest(m))
    expect(back.cid.toString()).toBe(m.cid.toString())
    expect(back.body).toEqual(m.body)
    expect(back.signatures).toHaveLength(2)
  })

  it('refuses a non-canonical body: unsorted keys and an integer in a longer form', async () => {
    const { keys, genesis } = await setup()
    const m = await nextManifest(genesis, keys.release.slice(0, 2))
    const plain = cbor.decode<Record<string, unknown>>(m.bodyBytes)
    // insertion order instead of dag-cbor's length-first order
    const unsorted = cborgEncode(plain, { ...cbor.encodeOptions, mapSorter: () => 0 } as never)
    const reordered = Object.fromEntries(Object.entries(plain).reverse())
    const unsorted2 = cborgEncode(reordered, { ...cbor.encodeOptions, mapSorter: () => 0 } as never)
    const nonCanonical = [unsorted, unsorted2].find(b => !Buffer.from(b).equals(Buffer.from(m.bodyBytes)))
    expect(nonCanonical).toBeDefined()
    const wrapped = cbor.encode({ b: nonCanonical as Uint8Array, s: [] })
    await expect(decodeSignedManifest(wrapped)).rejects.toThrow(NonCanonicalEncodingError)

    // version 1 as a one-byte-argument integer (0x18 0x01) instead of the immediate 0x01
    await expect(decodeSignedManifest(cbor.encode({ b: nonCanonicalBody(m), s: [] }))).rejects.toThrow(NonCanonicalEncodingError)
  })

  it('refuses random bytes, wrong shapes, unsafe integers and oversize input with typed errors', async () => {
    await expect(decodeSignedManifest(new Uint8Array([0xff, 0x00, 0x13]))).rejects.toThrow(ManifestDecodeError)
    await expect(decodeSignedManifest(cbor.encode({ b: new Uint8Array([1]), s: [], x: 1 }))).rejects.toThrow(ManifestDecodeError)
    await expect(decodeSignedManifest(cbor.encode([1, 2, 3]))).rejects.toThrow(ManifestDecodeError)
    await expect(decodeSignedManifest(new Uint8Array(MAX_MANIFEST_BYTES + 1))).rejects.toThrow(ManifestTooLargeError)
    const { genesis } = await setup()
    const body = cbor.decode<Record<string, unknown>>(genesis.bodyBytes)
    body.version = 2 ** 53
    body.previous = genesis.cid
    await expect(decodeSignedManifest(cbor.encode({ b: cbor.encode(body), s: [] }))).rejects.toThrow(ManifestDecodeError)
  })

  it('will not build a body with a version that is not a safe integer', async () => {
    const { genesis } = await setup()
    await expect(createManifest({ ...genesis.body, version: 1.5, previous: genesis.cid })).rejects.toThrow(ManifestDecodeError)
  })

  it('round-trips the JSON genesis configuration to the same genesis CID', async () => {
    const { config, genesis } = await setup()
    const json = JSON.parse(JSON.stringify(genesisToJSON(config)))
    expect((await genesisManifest(genesisFromJSON(json))).cid.toString()).toBe(genesis.cid.toString())
  })
})

describe('manifest chain', () => {
  it('accepts a chain signed by the release threshold and survives a reopen', async () => {
    const { keys, config, genesis, datastore, chain } = await setup()
    const [m1, m2] = await buildChain(config, keys.release.slice(0, 2), 2)
    expect((await chain.consider(m1!)).kind).toBe('accepted')
    expect((await chain.consider(m2!)).kind).toBe('accepted')
    expect(chain.head().cid.toString()).toBe(m2!.cid.toString())
    const reopened = await openManifestChain({ datastore, genesis })
    expect(reopened.head().body.version).toBe(2)
    expect(reopened.get(1)?.cid.toString()).toBe(m1!.cid.toString())
  })

  it('refuses a store written for another genesis', async () => {
    const { datastore } = await setup()
    const other = await genesisManifest(await makeGenesis(await makeKeys()))
    await expect(openManifestChain({ datastore, genesis: other })).rejects.toThrow(GenesisMismatchError)
  })

  it('rejects a bad signature, an unknown key and too few distinct keys, storing nothing', async () => {
    const { keys, genesis, datastore, chain } = await setup()
    const m = await nextManifest(genesis, keys.release.slice(0, 2))
    const tampered = { ...m, signatures: m.signatures.map((s, i) => i === 0 ? { ...s, signature: s.signature.map(b => b ^ 1) } : s) }
    await expect(chain.consider(tampered)).rejects.toThrow(BadSignatureError)
    const stranger = await generateKeyPair('Ed25519')
    await expect(chain.consider(await nextManifest(genesis, [stranger, ...keys.release.slice(0, 2)]))).rejects.toThrow(UnknownKeyError)
    await expect(chain.consider(await nextManifest(genesis, keys.release.slice(0, 1)))).rejects.toThrow(BelowThresholdError)
    // one key signing twice is one key
    const once = await nextManifest(genesis, keys.release.slice(0, 1))
    const twice = { ...once, signatures: [once.signatures[0]!, once.signatures[0]!] }
    await expect(chain.consider(twice)).rejects.toThrow(BelowThresholdError)
    // a signature over another domain (the raw CID) is not a manifest signature
    const unsigned = await nextManifest(genesis, [])
    const raw = await Promise.all(keys.release.slice(0, 2).map(async k => ({ publicKey: publicKeyToProtobuf(k.publicKey), signature: await k.sign(unsigned.cid.bytes) })))
    await expect(chain.consider({ ...unsigned, signatures: raw })).rejects.toThrow(BadSignatureError)
    expect(chain.head().body.version).toBe(0)
    const keysStored = []
    for await (const k of datastore.queryKeys({ prefix: '/v/' })) keysStored.push(k)
    expect(keysStored).toHaveLength(1)
  })

  it('rejects a broken previous link and a manifest of another system', async () => {
    const { keys, genesis, chain } = await setup()
    const m1 = await nextManifest(genesis, keys.release.slice(0, 2))
    await chain.consider(m1)
    const broken = await nextManifest(m1, keys.release.slice(0, 2), { previous: genesis.cid })
    await expect(chain.consider(broken)).rejects.toThrow(BrokenChainError)
    await expect(chain.consider(await nextManifest(m1, keys.release.slice(0, 2), { system: 'other' }))).rejects.toThrow(WrongSystemError)
  })

  it('reports a replay as old or duplicate and a gap as ahead', async () => {
    const { keys, config, chain } = await setup()
    const [m1, m2, m3] = await buildChain(config, keys.release.slice(0, 2), 3)
    expect((await chain.consider(m3!)).kind).toBe('ahead')
    await chain.consider(m1!)
    await chain.consider(m2!)
    expect((await chain.consider(m1!)).kind).toBe('old')
    expect((await chain.consider(m2!)).kind).toBe('duplicate')
  })

  it('merges a later co-signature into the same manifest: same CID, not a fork', async () => {
    const { keys, genesis, chain } = await setup()
    const m = await nextManifest(genesis, keys.release.slice(0, 2))
    await chain.consider(m)
    const third = await signManifest({ ...m, signatures: [] }, keys.release[2]!)
    expect(third.cid.toString()).toBe(m.cid.toString())
    expect((await chain.consider(third)).kind).toBe('cosigned')
    expect(chain.get(1)?.signatures).toHaveLength(3)
    expect(chain.halt).toBeUndefined()
  })

  it('turns two validly signed bodies at one version into a halt, kept across a reopen', async () => {
    const { keys, genesis, datastore, chain } = await setup()
    const a = await nextManifest(genesis, keys.release.slice(0, 2))
    const b = await nextManifest(genesis, keys.release.slice(1, 3), { createdAt: 42 })
    await chain.consider(a)
    const verdict = await chain.consider(b)
    expect(verdict.kind).toBe('equivocation')
    expect(chain.halt?.version).toBe(1)
    expect((await chain.consider(await nextManifest(a, keys.release.slice(0, 2)))).kind).toBe('halted')
    const reopened = await openManifestChain({ datastore, genesis })
    expect(reopened.halt?.b.cid.toString()).toBe(b.cid.toString())
  })

  it('halts on a verified fork proof and refuses one that proves nothing', async () => {
    const { keys, genesis, chain } = await setup()
    const a = await nextManifest(genesis, keys.release.slice(0, 2))
    const b = await nextManifest(genesis, keys.release.slice(1, 3), { createdAt: 42 })
    const weak = await nextManifest(genesis, keys.release.slice(0, 1), { createdAt: 43 })
    await expect(chain.recordForkProof({ version: 1, a, b: weak })).rejects.toThrow(BelowThresholdError)
    expect(chain.halt).toBeUndefined()
    expect(await chain.recordForkProof({ version: 1, a, b })).toBe(true)
    expect(chain.halt).toBeDefined()
  })

  it('rotates keys: a policy change needs old and new root thresholds; retired keys then get nothing accepted', async () => {
    const { keys, genesis, chain } = await setup()
    const next = await makeKeys()
    const newPolicy = policyOf(next)
    // release keys alone cannot change the policy
    await expect(chain.consider(await nextManifest(genesis, keys.release.slice(0, 2), { policy: newPolicy })))
      .rejects.toThrow(PolicyChangeRefusedError)
    // old roots without the new roots
    await expect(chain.consider(await nextManifest(genesis, [...keys.release.slice(0, 2), ...keys.root], { policy: newPolicy })))
      .rejects.toThrow(PolicyChangeRefusedError)
    const rotation = await nextManifest(genesis, [...keys.release.slice(0, 2), ...keys.root, ...next.root], { policy: newPolicy })
    expect((await chain.consider(rotation)).kind).toBe('accepted')
    await expect(chain.consider(await nextManifest(rotation, keys.release))).rejects.toThrow(UnknownKeyError)
    await expect(chain.consider(await nextManifest(rotation, keys.root))).rejects.toThrow(UnknownKeyError)
    expect((await chain.consider(await nextManifest(rotation, next.release.slice(0, 2)))).kind).toBe('accepted')
  })
})
