/**
 * The genesis configuration: the system's name, its first trust policy and the classes nodes
 * start with (version 0). Every node derives the same version-0 manifest from it, so its CID names
 * the system's history; the genesis is trusted because the node was configured with it, not
 * because of signatures.
 */
import { CID } from 'multiformats/cid'
import { fromString } from 'uint8arrays/from-string'
import { toString } from 'uint8arrays/to-string'
import { createManifest } from './codec.ts'
import { ManifestError } from './errors.ts'
import { validatePolicy } from './policy.ts'
import type { SignedManifest, TrustPolicy } from './types.ts'

/**
 * A genesis configuration file or object is malformed.
 */
export class GenesisConfigError extends ManifestError {
  static override readonly name = 'GenesisConfigError'
  override readonly name = 'GenesisConfigError'
}

/**
 * A class nodes may run at version 0, with its bundle.
 */
export interface GenesisClass {
  /** the class name, e.g. `chord-node` */
  name: string
  /** root CID of the class's version-0 bundle */
  bundle: CID
  /** total bytes of the bundle */
  bundleSize: number
}

/**
 * The system's genesis configuration.
 */
export interface GenesisConfig {
  /** the system's name; scopes every protocol and topic */
  system: string
  /** the trust policy in force from version 1 on, until a manifest changes it */
  policy: TrustPolicy
  /** the classes of version 0 */
  classes: GenesisClass[]
  /** milliseconds since the epoch; part of the genesis CID */
  createdAt: number
}

/**
 * The version-0 manifest of a genesis configuration.
 */
export async function genesisManifest (config: GenesisConfig): Promise<SignedManifest> {
  try {
    validatePolicy(config.policy)
    return await createManifest({
      system: config.system,
      version: 0,
      previous: null,
      classUpgrades: config.classes.map(c => ({
        oldClass: c.name,
        newClass: c.name,
        bundle: c.bundle,
        bundleSize: c.bundleSize,
        schedule: { name: 'eager' }
      })),
      createdAt: config.createdAt,
      policy: config.policy
    })
  } catch (err) {
    throw new GenesisConfigError(`genesis: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * The JSON form of a genesis configuration (as `molt init` writes it): keys in base64 of their
 * protobuf encoding, CIDs as strings.
 */
export interface GenesisConfigJSON {
  system: string
  createdAt: number
  policy: {
    root: { keys: string[], threshold: number }
    release: { keys: string[], threshold: number }
  }
  classes: Array<{ name: string, bundle: string, bundleSize: number }>
}

/**
 * Converts a genesis configuration to its JSON form.
 */
export function genesisToJSON (config: GenesisConfig): GenesisConfigJSON {
  const role = (r: TrustPolicy['root']): { keys: string[], threshold: number } => ({ keys: r.keys.map(k => toString(k, 'base64')), threshold: r.threshold })
  return {
    system: config.system,
    createdAt: config.createdAt,
    policy: { root: role(config.policy.root), release: role(config.policy.release) },
    classes: config.classes.map(c => ({ name: c.name, bundle: c.bundle.toString(), bundleSize: c.bundleSize }))
  }
}

/**
 * Parses the JSON form of a genesis configuration, throwing `GenesisConfigError` with the field at
 * fault.
 */
export function genesisFromJSON (value: unknown): GenesisConfig {
  const obj = (v: unknown, what: string): Record<string, unknown> => {
    if (v == null || typeof v !== 'object' || Array.isArray(v)) {
      throw new GenesisConfigError(`${what}: expected an object`)
    }
    return v as Record<string, unknown>
  }
  const int = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw new GenesisConfigError(`${what}: expected a non-negative integer`)
    }
    return v
  }
  const str = (v: unknown, what: string): string => {
    if (typeof v !== 'string' || v.length === 0) {
      throw new GenesisConfigError(`${what}: expected a string`)
    }
    return v
  }
  const arr = (v: unknown, what: string): unknown[] => {
    if (!Array.isArray(v)) {
      throw new GenesisConfigError(`${what}: expected a list`)
    }
    return v
  }
  const role = (v: unknown, what: string): TrustPolicy['root'] => {
    const r = obj(v, what)
    return {
      keys: arr(r.keys, `${what}.keys`).map((k, i) => {
        try {
          return fromString(str(k, `${what}.keys[${i}]`), 'base64')
        } catch (err) {
          throw new GenesisConfigError(`${what}.keys[${i}]: not base64 (${(err as Error).message})`)
        }
      }),
      threshold: int(r.threshold, `${what}.threshold`)
    }
  }
  const g = obj(value, 'genesis')
  const policy = obj(g.policy, 'policy')
  return {
    system: str(g.system, 'system'),
    createdAt: int(g.createdAt, 'createdAt'),
    policy: { root: role(policy.root, 'policy.root'), release: role(policy.release, 'policy.release') },
    classes: arr(g.classes, 'classes').map((c, i) => {
      const o = obj(c, `classes[${i}]`)
      let bundle: CID
      try {
        bundle = CID.parse(str(o.bundle, `classes[${i}].bundle`))
      } catch (err) {
        throw new GenesisConfigError(`classes[${i}].bundle: not a CID (${(err as Error).message})`)
      }
      return { name: str(o.name, `classes[${i}].name`), bundle, bundleSize: int(o.bundleSize, `classes[${i}].bundleSize`) }
    })
  }
}
