/**
 * Does the app API version this host offers satisfy the range a bundle declares (`moltApi`)?
 * The `semver` package decides; a range it cannot parse is a `TypeError`, not a silent "no".
 */
import semver from 'semver'

/**
 * True when `version` satisfies `range` (npm's semver rules).
 */
export function satisfies (version: string, range: string): boolean {
  if (semver.validRange(range) == null) {
    throw new TypeError(`"${range}" is not a semver range`)
  }
  return semver.satisfies(version, range)
}
