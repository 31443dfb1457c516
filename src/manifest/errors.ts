/**
 * Typed errors of manifests. Each has a stable `name` that callers, metrics and logs match on;
 * a manifest that raises one changes no state.
 */

/** Base of every reason a manifest is refused. */
export class ManifestError extends Error {
  static override readonly name: string = 'ManifestError'
  override readonly name: string = 'ManifestError'
}

/** The bytes are not a well-formed signed manifest (wrong shape, types or field values). */
export class ManifestDecodeError extends ManifestError {
  static override readonly name = 'ManifestDecodeError'
  override readonly name = 'ManifestDecodeError'
}

/** The body is valid dag-cbor but not its canonical encoding, so its CID would be ambiguous. */
export class NonCanonicalEncodingError extends ManifestError {
  static override readonly name = 'NonCanonicalEncodingError'
  override readonly name = 'NonCanonicalEncodingError'
}

/** The encoded manifest is larger than the limit. */
export class ManifestTooLargeError extends ManifestError {
  static override readonly name = 'ManifestTooLargeError'
  override readonly name = 'ManifestTooLargeError'
}

/** A signature does not verify against its key and the manifest's body CID. */
export class BadSignatureError extends ManifestError {
  static override readonly name = 'BadSignatureError'
  override readonly name = 'BadSignatureError'
}

/** A signature was made by a key that the trust policy in force does not name. */
export class UnknownKeyError extends ManifestError {
  static override readonly name = 'UnknownKeyError'
  override readonly name = 'UnknownKeyError'
}

/** Fewer distinct authorized keys signed than the role's threshold requires. */
export class BelowThresholdError extends ManifestError {
  static override readonly name = 'BelowThresholdError'
  override readonly name = 'BelowThresholdError'
}

/**
 * A policy change lacks the root signatures it needs: the old root threshold and the new one.
 * Release keys alone can never change the policy.
 */
export class PolicyChangeRefusedError extends ManifestError {
  static override readonly name = 'PolicyChangeRefusedError'
  override readonly name = 'PolicyChangeRefusedError'
}

/** The trust policy itself is malformed (threshold out of range, a key that is not ed25519). */
export class InvalidPolicyError extends ManifestError {
  static override readonly name = 'InvalidPolicyError'
  override readonly name = 'InvalidPolicyError'
}

/** Version N does not name the body CID of the accepted version N-1 as its previous. */
export class BrokenChainError extends ManifestError {
  static override readonly name = 'BrokenChainError'
  override readonly name = 'BrokenChainError'
}

/** The manifest belongs to another system. */
export class WrongSystemError extends ManifestError {
  static override readonly name = 'WrongSystemError'
  override readonly name = 'WrongSystemError'
}

/** A manifest at or below the accepted head that is not the stored one's body: a replay. */
export class ReplayedManifestError extends ManifestError {
  static override readonly name = 'ReplayedManifestError'
  override readonly name = 'ReplayedManifestError'
}

/** A fork proof whose two manifests do not prove equivocation. */
export class InvalidForkProofError extends ManifestError {
  static override readonly name = 'InvalidForkProofError'
  override readonly name = 'InvalidForkProofError'
}

/** The store holds the chain of a different genesis than the one the node was started with. */
export class GenesisMismatchError extends ManifestError {
  static override readonly name = 'GenesisMismatchError'
  override readonly name = 'GenesisMismatchError'
}
