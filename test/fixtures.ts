/**
 * Shared test fixtures: release and root keys, a genesis, and signed manifests chained onto it.
 */
import { generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'
import { createManifest, genesisManifest, signManifest, type GenesisConfig } from '../src/manifest/index.ts'
import type { ClassUpgrade, ManifestBody, SignedManifest, TrustPolicy } from '../src/manifest/types.ts'
import type { PrivateKey } from '@libp2p/interface'

/** A fake bundle CID: manifests name bundles, the chain never fetches them. */
export async function fakeBundle (label: string): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(label)))
}

/** Keys of a test system. */
export interface TestKeys {
  root: PrivateKey[]
  release: PrivateKey[]
}

/** Makes `roots` root keys and `releases` release keys. */
export async function makeKeys (roots = 2, releases = 3): Promise<TestKeys> {
  return {
    root: await Promise.all(Array.from({ length: roots }, async () => await generateKeyPair('Ed25519'))),
    release: await Promise.all(Array.from({ length: releases }, async () => await generateKeyPair('Ed25519')))
  }
}

/** The trust policy of a set of keys with given thresholds. */
export function policyOf (keys: TestKeys, rootThreshold = 2, releaseThreshold = 2): TrustPolicy {
  return {
    root: { keys: keys.root.map(k => publicKeyToProtobuf(k.publicKey)), threshold: rootThreshold },
    release: { keys: keys.release.map(k => publicKeyToProtobuf(k.publicKey)), threshold: releaseThreshold }
  }
}

/** A genesis config with one class, `app`. */
export async function makeGenesis (keys: TestKeys, system = 'test'): Promise<GenesisConfig> {
  return {
    system,
    policy: policyOf(keys),
    classes: [{ name: 'app', bundle: await fakeBundle('genesis'), bundleSize: 10 }],
    createdAt: 1_700_000_000_000
  }
}

/** One class upgrade of `app` to a fake bundle. */
export async function appUpgrade (label: string): Promise<ClassUpgrade> {
  return { oldClass: 'app', newClass: 'app', bundle: await fakeBundle(label), bundleSize: 100, schedule: { name: 'eager' } }
}

/** Builds the body that follows `previous`, signed by `signers`. */
export async function nextManifest (previous: SignedManifest, signers: PrivateKey[], patch: Partial<ManifestBody> = {}): Promise<SignedManifest> {
  const version = previous.body.version + 1
  let m = await createManifest({
    system: previous.body.system,
    version,
    previous: previous.cid,
    classUpgrades: [await appUpgrade(`v${version}`)],
    createdAt: 1_700_000_000_000 + version,
    ...patch
  })
  for (const key of signers) {
    m = await signManifest(m, key)
  }
  return m
}

/** Builds versions 1..n on top of the genesis, each signed by `signers`. */
export async function buildChain (genesis: GenesisConfig, signers: PrivateKey[], n: number): Promise<SignedManifest[]> {
  const out: SignedManifest[] = []
  let prev = await genesisManifest(genesis)
  for (let i = 0; i < n; i++) {
    prev = await nextManifest(prev, signers)
    out.push(prev)
  }
  return out
}

/**
 * The same body with `version` written as a one-byte-argument integer (0x18 N) instead of the
 * immediate form: valid CBOR, not canonical dag-cbor. Needs a version below 24.
 */
export function nonCanonicalBody (m: SignedManifest): Uint8Array {
  const bytes = Buffer.from(m.bodyBytes)
  const key = Buffer.from([0x67, ...Buffer.from('version'), m.body.version])
  const at = bytes.indexOf(key)
  if (at < 0 || m.body.version >= 24) {
    throw new Error('no immediate version field to rewrite')
  }
  return Buffer.concat([bytes.subarray(0, at + 8), Buffer.from([0x18, m.body.version]), bytes.subarray(at + 9)])
}
