/**
 * Signatures and the trust policy (decision 3). Signatures are ed25519 over a domain-separated
 * message, `molt/manifest/v1` ‖ body CID bytes, so a signature made for anything else can never
 * be replayed as a manifest signature. Thresholds count distinct authorized keys, not signatures.
 * Root keys only change the policy; release keys sign manifests.
 */
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { concat } from 'uint8arrays/concat'
import { fromString } from 'uint8arrays/from-string'
import { toString } from 'uint8arrays/to-string'
import { BadSignatureError, BelowThresholdError, InvalidPolicyError, PolicyChangeRefusedError, UnknownKeyError } from './errors.ts'
import type { KeyRole, ManifestSignature, SignedManifest, TrustPolicy } from './types.ts'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

/** The domain every manifest signature is made in. */
export const MANIFEST_SIGNING_DOMAIN = 'molt/manifest/v1'

/**
 * The exact bytes a signer signs for a body CID in a domain.
 */
export function signingMessage (domain: string, cid: CID): Uint8Array {
  return concat([fromString(domain), cid.bytes])
}

function keyId (publicKey: Uint8Array): string {
  return toString(publicKey, 'base64')
}

function decodeKey (bytes: Uint8Array, what: string): PublicKey {
  let key: PublicKey
  try {
    key = publicKeyFromProtobuf(bytes)
  } catch (err) {
    throw new InvalidPolicyError(`${what}: not a protobuf-encoded public key (${(err as Error).message})`)
  }
  if (key.type !== 'Ed25519') {
    throw new InvalidPolicyError(`${what}: ${key.type} keys are not accepted, only Ed25519`)
  }
  return key
}

function validateRole (role: KeyRole, what: string): void {
  const ids = new Set<string>()
  role.keys.forEach((k, i) => {
    decodeKey(k, `${what}.keys[${i}]`)
    ids.add(keyId(k))
  })
  if (ids.size !== role.keys.length) {
    throw new InvalidPolicyError(`${what}: the same key is listed twice`)
  }
  if (!Number.isSafeInteger(role.threshold) || role.threshold < 1 || role.threshold > role.keys.length) {
    throw new InvalidPolicyError(`${what}.threshold: must be between 1 and the number of keys (${role.keys.length}), got ${role.threshold}`)
  }
}

/**
 * Throws `InvalidPolicyError` unless every key is ed25519, listed once, and every threshold is
 * reachable.
 */
export function validatePolicy (policy: TrustPolicy): void {
  validateRole(policy.root, 'policy.root')
  validateRole(policy.release, 'policy.release')
}

/**
 * The signatures after adding this key's over `domain` ‖ `cid` (replacing an earlier one by the
 * same key).
 */
export async function signBody (domain: string, cid: CID, signatures: ManifestSignature[], privateKey: PrivateKey): Promise<ManifestSignature[]> {
  const publicKey = publicKeyToProtobuf(privateKey.publicKey)
  const signature = await privateKey.sign(signingMessage(domain, cid))
  return [...signatures.filter(s => keyId(s.publicKey) !== keyId(publicKey)), { publicKey, signature }]
}

/**
 * Adds this key's signature (replacing an earlier one by the same key). Signing is offline and
 * incremental: co-signers each add theirs to the same body, whose CID never changes.
 */
export async function signManifest (manifest: SignedManifest, privateKey: PrivateKey): Promise<SignedManifest> {
  return { ...manifest, signatures: await signBody(MANIFEST_SIGNING_DOMAIN, manifest.cid, manifest.signatures, privateKey) }
}

/**
 * The union of two copies' signatures, one per key, for the same body.
 */
export function mergeSignatures (a: SignedManifest, b: SignedManifest): SignedManifest {
  const byKey = new Map<string, ManifestSignature>()
  for (const s of [...a.signatures, ...b.signatures]) {
    if (!byKey.has(keyId(s.publicKey))) {
      byKey.set(keyId(s.publicKey), s)
    }
  }
  return { ...a, signatures: [...byKey.values()] }
}

function signersIn (role: KeyRole, signers: Set<string>): number {
  return role.keys.filter(k => signers.has(keyId(k))).length
}

/**
 * Verifies detached signatures over `domain` ‖ `cid`: every one must verify and come from a key
 * the policy names (or one of `alsoKnown`), and distinct release keys must reach the release
 * threshold.
 *
 * @returns the distinct keys that signed
 */
export async function verifySignatures (domain: string, cid: CID, signatures: ManifestSignature[], policy: TrustPolicy, what: string, alsoKnown: Uint8Array[] = []): Promise<Set<string>> {
  const known = new Set([...policy.root.keys, ...policy.release.keys, ...alsoKnown].map(keyId))
  const message = signingMessage(domain, cid)
  const signers = new Set<string>()
  for (const [i, s] of signatures.entries()) {
    const id = keyId(s.publicKey)
    if (!known.has(id)) {
      throw new UnknownKeyError(`${what}: signature ${i} is by key ${id.slice(0, 16)}…, which the trust policy does not name`)
    }
    let ok = false
    try {
      ok = await publicKeyFromProtobuf(s.publicKey).verify(message, s.signature)
    } catch {
      ok = false
    }
    if (!ok) {
      throw new BadSignatureError(`${what}: signature ${i} does not verify for ${cid.toString()}`)
    }
    signers.add(id)
  }
  const release = signersIn(policy.release, signers)
  if (release < policy.release.threshold) {
    throw new BelowThresholdError(`${what}: ${release} of the ${policy.release.threshold} release signatures needed`)
  }
  return signers
}

/**
 * Verifies a manifest's signatures under the policy in force for its version
 * ({@link verifySignatures}); a policy change also needs the old and the new root thresholds.
 *
 * @returns the distinct keys that signed
 */
export async function verifyManifest (manifest: SignedManifest, policy: TrustPolicy): Promise<Set<string>> {
  const change = manifest.body.policy
  if (change != null) {
    validatePolicy(change)
  }
  const signers = await verifySignatures(MANIFEST_SIGNING_DOMAIN, manifest.cid, manifest.signatures, policy, `manifest ${manifest.body.version}`, change?.root.keys)
  if (change != null) {
    const oldRoot = signersIn(policy.root, signers)
    const newRoot = signersIn(change.root, signers)
    if (oldRoot < policy.root.threshold || newRoot < change.root.threshold) {
      throw new PolicyChangeRefusedError(`manifest ${manifest.body.version} changes the trust policy: it has ${oldRoot} of ${policy.root.threshold} current root signatures and ${newRoot} of ${change.root.threshold} new root signatures`)
    }
  }
  return signers
}
