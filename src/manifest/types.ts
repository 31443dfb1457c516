import type { CID } from 'multiformats/cid'

/**
 * A set of keys and how many distinct ones must sign.
 */
export interface KeyRole {
  /** protobuf-encoded libp2p public keys (ed25519), as `publicKeyToProtobuf` gives them */
  keys: Uint8Array[]
  /** how many distinct keys of `keys` must sign; 1 ≤ threshold ≤ keys.length */
  threshold: number
}

/**
 * Who may do what, as in TUF: root keys only change the policy, release keys sign manifests and
 * control messages.
 */
export interface TrustPolicy {
  root: KeyRole
  release: KeyRole
}

/**
 * How a node of the old class decides when to upgrade: a built-in scheduling function by name,
 * or `bundle:<export>` for a custom SF exported by the new class's bundle.
 */
export interface ScheduleSpec {
  /** e.g. `eager`, `gradual`, `one-replica-at-a-time`, `bundle:mySchedule` */
  name: string
  /** parameters handed to the SF; plain JSON-compatible values only */
  params?: Record<string, string | number | boolean | null>
}

/**
 * One class upgrade ⟨old-class, new-class, TF, SF, past-SO, future-SO⟩. The TF, past-SO and
 * future-SO are named exports of the bundle; the SF is named by `schedule`.
 */
export interface ClassUpgrade {
  /** the class that nodes run now */
  oldClass: string
  /** the class they run after the upgrade (may equal oldClass) */
  newClass: string
  /** root CID of the new class's bundle */
  bundle: CID
  /** total bytes of the bundle's files; the fetch never reads past it */
  bundleSize: number
  /** when this node upgrades */
  schedule: ScheduleSpec
  /**
   * The version a node must be at for this class upgrade to apply, when it is not `version - 1`:
   * lets version N+2 take nodes stuck at N past a broken N+1 (fix forward).
   */
  fromVersion?: number
}

/**
 * The signed part of a manifest. Its CID (canonical dag-cbor, sha256) is the manifest's identity:
 * signatures are detached, so a co-signature never changes it.
 */
export interface ManifestBody {
  /** the system this manifest belongs to */
  system: string
  /** system version N, a safe integer ≥ 0; 0 is the genesis */
  version: number
  /** body CID of manifest N-1; null only at the genesis */
  previous: CID | null
  /** the class upgrades of this version; classes not named just advance their version number */
  classUpgrades: ClassUpgrade[]
  /** milliseconds since the epoch, set by the upgrader; informational only */
  createdAt: number
  /** a new trust policy that takes effect from the next version on */
  policy?: TrustPolicy
}

/**
 * One detached signature over `molt/manifest/v1` ‖ body CID bytes.
 */
export interface ManifestSignature {
  /** protobuf-encoded libp2p public key of the signer */
  publicKey: Uint8Array
  /** the ed25519 signature */
  signature: Uint8Array
}

/**
 * A manifest: its body, the body's canonical bytes and CID, and the signatures gathered so far.
 */
export interface SignedManifest {
  body: ManifestBody
  /** the canonical dag-cbor encoding of `body` */
  bodyBytes: Uint8Array
  /** CIDv1(dag-cbor, sha256(bodyBytes)) */
  cid: CID
  signatures: ManifestSignature[]
}

/**
 * Proof that two validly signed bodies exist at one version: every node that sees it halts the
 * rollout until the root keys resolve it.
 */
export interface ForkProof {
  version: number
  a: SignedManifest
  b: SignedManifest
}
