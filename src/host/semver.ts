/**
 * Does the app API version this host offers satisfy the range a bundle declares (`moltApi`)?
 * The `semver` package decides; a range it cannot parse is a `TypeError`, not a silent "no".
 */
// two functions, not the package's index: every app worker runs this at start, and the index
// loads all fifty of semver's modules (about twice the start-up CPU of these two)
import semverSatisfies from 'semver/functions/satisfies.js'
import validRange from 'semver/ranges/valid.js'

/**
 * True when `version` satisfies `range` (npm's semver rules).
 */
export function satisfies (version: string, range: string): boolean {
  if (validRange(range) == null) {
    throw new TypeError(`"${range}" is not a semver range`)
  }
  return semverSatisfies(version, range)
}
