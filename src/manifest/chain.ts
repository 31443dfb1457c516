/**
 * The manifest chain: every accepted manifest from the genesis to the head, durably stored, each
 * verified under the trust policy in force for its version and linked to its predecessor by body
 * CID. Two validly signed bodies at one version are equivocation: the chain records the proof and
 * refuses to advance (the rollout is halted) until the root keys resolve it.
 */
import * as cbor from '@ipld/dag-cbor'
import { logger } from '@libp2p/logger'
import { Key, type Datastore } from 'interface-datastore'
import { decodeSignedManifest, encodeSignedManifest } from './codec.ts'
import {
  BrokenChainError, GenesisMismatchError, InvalidForkProofError, ManifestDecodeError, WrongSystemError
} from './errors.ts'
import { mergeSignatures, verifyManifest } from './policy.ts'
import type { ForkProof, SignedManifest, TrustPolicy } from './types.ts'

const log = logger('molt:manifest:chain')

/**
 * How the chain took a manifest that was not invalid. Invalid manifests throw a `ManifestError`.
 *
 * - `accepted`: the next version, verified, chained and stored;
 * - `cosigned`: a stored manifest gained signatures from further authorized keys;
 * - `duplicate`: the head again, nothing new;
 * - `old`: an earlier version already stored (a replay), nothing new;
 * - `ahead`: a version past head + 1: its predecessors must be pulled first;
 * - `equivocation`: a second validly signed body at a stored version; the chain is now halted;
 * - `halted`: the chain is halted by a fork proof and accepts no new version.
 */
export type Verdict =
  | { kind: 'accepted' }
  | { kind: 'cosigned' }
  | { kind: 'duplicate' }
  | { kind: 'old' }
  | { kind: 'ahead', version: number }
  | { kind: 'equivocation', proof: ForkProof }
  | { kind: 'halted' }

/**
 * A node's manifest chain.
 */
export interface ManifestChain {
  /** the version-0 manifest derived from the genesis configuration */
  readonly genesis: SignedManifest

  /** set when equivocation was proven: the rollout is halted */
  readonly halt: ForkProof | undefined

  /** the highest accepted manifest */
  head(): SignedManifest

  /** the accepted manifest at a version, if stored */
  get(version: number): SignedManifest | undefined

  /** the trust policy that signatures of `version` are verified under */
  policyFor(version: number): TrustPolicy

  /**
   * Verifies a manifest and stores it when it extends or co-signs the chain. Throws a typed
   * `ManifestError` when it is invalid; an invalid manifest changes nothing.
   */
  consider(manifest: SignedManifest): Promise<Verdict>

  /**
   * Verifies a fork proof from a peer; when it proves equivocation the chain halts. Resolves true
   * when this proof newly halted the chain. Throws `InvalidForkProofError` (or the verification
   * error) when it proves nothing.
   */
  recordForkProof(proof: ForkProof): Promise<boolean>
}

/**
 * Components of {@link openManifestChain}.
 */
export interface ManifestChainInit {
  /** where accepted manifests live (a namespace of the node's store) */
  datastore: Datastore
  /** the version-0 manifest, from `genesisManifest(config)` */
  genesis: SignedManifest
}

const FORK_KEY = new Key('/fork')

function versionKey (version: number): Key {
  // zero-padded so keys sort by version
  return new Key(`/v/${version.toString().padStart(16, '0')}`)
}

class Chain implements ManifestChain {
  private readonly manifests = new Map<number, SignedManifest>()
  private headVersion = 0
  private pendingProofs = new Map<number, ForkProof>()
  halt: ForkProof | undefined
  private queue: Promise<unknown> = Promise.resolve()

  private readonly datastore: Datastore
  readonly genesis: SignedManifest

  constructor (datastore: Datastore, genesis: SignedManifest) {
    this.datastore = datastore
    this.genesis = genesis
    this.manifests.set(0, genesis)
  }

  async load (): Promise<void> {
    const stored = new Map<number, SignedManifest>()
    for await (const { key, value } of this.datastore.query({ prefix: '/v/' })) {
      const manifest = await decodeSignedManifest(value)
      if (versionKey(manifest.body.version).toString() !== key.toString()) {
        throw new ManifestDecodeError(`store: ${key.toString()} holds version ${manifest.body.version}`)
      }
      stored.set(manifest.body.version, manifest)
    }
    const storedGenesis = stored.get(0)
    if (storedGenesis == null) {
      await this.datastore.put(versionKey(0), encodeSignedManifest(this.genesis))
    } else if (storedGenesis.cid.toString() !== this.genesis.cid.toString()) {
      throw new GenesisMismatchError(`the store holds the chain of genesis ${storedGenesis.cid.toString()}, not ${this.genesis.cid.toString()}`)
    }
    // our own store was verified when written; still, only a linked run from the genesis counts
    for (let v = 1; stored.has(v); v++) {
      const m = stored.get(v) as SignedManifest
      if (m.body.previous?.equals(this.manifests.get(v - 1)?.cid) !== true) {
        log.error('stored manifest %d does not link to %d; ignoring it and what follows', v, v - 1)
        break
      }
      this.manifests.set(v, m)
      this.headVersion = v
    }
    if (await this.datastore.has(FORK_KEY)) {
      const { a, b } = cbor.decode<{ a: Uint8Array, b: Uint8Array }>(await this.datastore.get(FORK_KEY))
      const ma = await decodeSignedManifest(a)
      this.halt = { version: ma.body.version, a: ma, b: await decodeSignedManifest(b) }
    }
  }

  head (): SignedManifest {
    return this.manifests.get(this.headVersion) as SignedManifest
  }

  get (version: number): SignedManifest | undefined {
    return this.manifests.get(version)
  }

  policyFor (version: number): TrustPolicy {
    for (let v = Math.min(version - 1, this.headVersion); v >= 0; v--) {
      const policy = this.manifests.get(v)?.body.policy
      if (policy != null) {
        return policy
      }
    }
    // the genesis always carries a policy
    return this.genesis.body.policy as TrustPolicy
  }

  /** One decision at a time: gossip, pulls and local publishes race otherwise. */
  private async serial<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn)
    this.queue = run.catch(() => {})
    return await run
  }

  async consider (manifest: SignedManifest): Promise<Verdict> {
    return await this.serial(async () => await this.considerNow(manifest))
  }

  private async considerNow (manifest: SignedManifest): Promise<Verdict> {
    const { body } = manifest
    if (body.system !== this.genesis.body.system) {
      throw new WrongSystemError(`manifest for system "${body.system}", this node runs "${this.genesis.body.system}"`)
    }
    if (body.version === 0) {
      if (manifest.cid.equals(this.genesis.cid)) {
        return { kind: 'old' }
      }
      throw new WrongSystemError(`a different genesis (${manifest.cid.toString()}) for system "${body.system}"`)
    }
    const stored = this.manifests.get(body.version)
    if (stored != null) {
      if (stored.cid.equals(manifest.cid)) {
        return await this.cosign(stored, manifest)
      }
      // a different body at a stored version: equivocation if validly signed, else just invalid
      await verifyManifest(manifest, this.policyFor(body.version))
      const proof: ForkProof = { version: body.version, a: stored, b: manifest }
      await this.setHalt(proof)
      return { kind: 'equivocation', proof }
    }
    if (this.halt != null) {
      return { kind: 'halted' }
    }
    if (body.version > this.headVersion + 1) {
      return { kind: 'ahead', version: body.version }
    }
    const head = this.head()
    if (body.previous == null || !body.previous.equals(head.cid)) {
      throw new BrokenChainError(`manifest ${body.version} names ${String(body.previous)} as its previous, but version ${head.body.version} is ${head.cid.toString()}`)
    }
    for (const u of body.classUpgrades) {
      if (u.fromVersion != null && u.fromVersion >= body.version) {
        throw new BrokenChainError(`manifest ${body.version}: class upgrade of "${u.oldClass}" from version ${u.fromVersion}, which is not earlier`)
      }
    }
    await verifyManifest(manifest, this.policyFor(body.version))
    await this.datastore.put(versionKey(body.version), encodeSignedManifest(manifest))
    this.manifests.set(body.version, manifest)
    this.headVersion = body.version
    await this.checkPendingProof()
    return { kind: 'accepted' }
  }

  /**
   * The same body with other signatures: keep the union when the newcomers verify. The copy may
   * carry only the new co-signature, so the threshold is not required of it alone.
   */
  private async cosign (stored: SignedManifest, manifest: SignedManifest): Promise<Verdict> {
    const merged = mergeSignatures(stored, manifest)
    const same = merged.signatures.length === stored.signatures.length
    if (!same) {
      // verifies every signature of the union; the stored ones already met the thresholds
      await verifyManifest(merged, this.policyFor(stored.body.version))
      await this.datastore.put(versionKey(stored.body.version), encodeSignedManifest(merged))
      this.manifests.set(stored.body.version, merged)
      return { kind: 'cosigned' }
    }
    return stored.body.version === this.headVersion ? { kind: 'duplicate' } : { kind: 'old' }
  }

  async recordForkProof (proof: ForkProof): Promise<boolean> {
    return await this.serial(async () => {
      const { a, b } = proof
      if (a.body.version !== b.body.version || a.cid.equals(b.cid)) {
        throw new InvalidForkProofError('a fork proof needs two different bodies at one version')
      }
      if (a.body.system !== this.genesis.body.system || b.body.system !== this.genesis.body.system) {
        throw new WrongSystemError('fork proof for another system')
      }
      if (a.body.version === 0) {
        throw new InvalidForkProofError('the genesis cannot fork')
      }
      if (this.halt != null) {
        return false
      }
      if (a.body.version > this.headVersion + 1) {
        // the policy in force there is not known yet: re-check once the chain reaches it
        if (this.pendingProofs.size < 16) {
          this.pendingProofs.set(a.body.version, { version: a.body.version, a, b })
        }
        return false
      }
      const policy = this.policyFor(a.body.version)
      await verifyManifest(a, policy)
      await verifyManifest(b, policy)
      await this.setHalt({ version: a.body.version, a, b })
      return true
    })
  }

  private async checkPendingProof (): Promise<void> {
    const proof = this.pendingProofs.get(this.headVersion + 1) ?? this.pendingProofs.get(this.headVersion)
    if (proof == null) {
      return
    }
    this.pendingProofs.delete(proof.version)
    const policy = this.policyFor(proof.version)
    try {
      await verifyManifest(proof.a, policy)
      await verifyManifest(proof.b, policy)
      await this.setHalt(proof)
    } catch (err) {
      log('a pending fork proof at %d did not verify - %e', proof.version, err)
    }
  }

  private async setHalt (proof: ForkProof): Promise<void> {
    if (this.halt != null) {
      return
    }
    this.halt = proof
    await this.datastore.put(FORK_KEY, cbor.encode({ a: encodeSignedManifest(proof.a), b: encodeSignedManifest(proof.b) }))
    log.error('equivocation at version %d (%c vs %c): rollout halted', proof.version, proof.a.cid, proof.b.cid)
  }
}

/**
 * Opens a node's manifest chain from its store, writing the genesis on first start. Throws
 * `GenesisMismatchError` when the store belongs to another genesis.
 */
export async function openManifestChain (init: ManifestChainInit): Promise<ManifestChain> {
  const chain = new Chain(init.datastore, init.genesis)
  await chain.load()
  return chain
}
