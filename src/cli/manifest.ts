/**
 * `molt manifest create|show|verify` and `molt sign`: building, inspecting, co-signing and
 * checking manifest files offline (or against a running node's chain).
 */
import { resolve } from 'node:path'
import { fromString } from 'uint8arrays/from-string'
import {
  createManifest, decodeSignedManifest, encodeSignedManifest, genesisFromJSON, genesisManifest, signManifest, verifyManifest,
  type ClassUpgrade, type ManifestBody, type SignedManifest, type TrustPolicy
} from '../manifest/index.ts'
import { adminRequest } from '../node/admin.ts'
import {
  b64, CliError, flag, int, list, parseBundleRef, parseCid, parseClassPair, parseName, parseParams, readBytes, readGenesis,
  readManifest, readPrivateKey, required, str, UsageError, writeManifest,
  type Command, type ParsedArgs
} from './util.ts'
import type { CID } from 'multiformats/cid'

/** The options that describe class upgrades, shared by `manifest create` and `publish`. */
export const UPGRADE_OPTIONS = {
  schedule: { type: 'string' },
  param: { type: 'string', multiple: true },
  'from-version': { type: 'string' }
} as const

/**
 * Class upgrades from `OLD[:NEW]` pairs and one bundle each, with the shared schedule options.
 */
export function classUpgrades (args: ParsedArgs, entries: Array<{ oldClass: string, newClass: string, bundle: CID, bundleSize: number }>): ClassUpgrade[] {
  const schedule = str(args, 'schedule') ?? 'eager'
  if (schedule.length === 0 || schedule.length > 128) {
    throw new UsageError('--schedule: expected a name of 1-128 characters')
  }
  const params = parseParams(list(args, 'param'))
  const fromVersion = int(args, 'from-version', undefined)
  const seen = new Set<string>()
  return entries.map(e => {
    if (seen.has(e.oldClass)) {
      throw new UsageError(`class ${e.oldClass} is upgraded twice`)
    }
    seen.add(e.oldClass)
    return {
      ...e,
      schedule: params == null ? { name: schedule } : { name: schedule, params },
      ...(fromVersion != null ? { fromVersion } : {})
    }
  })
}

/** Builds and validates a manifest body, turning codec errors into one clear line. */
export async function buildManifest (body: ManifestBody): Promise<SignedManifest> {
  try {
    return await createManifest(body)
  } catch (err) {
    throw new UsageError(`the manifest would be invalid: ${(err as Error).message}`)
  }
}

/** Adds the signature of each key file. */
export async function signWith (manifest: SignedManifest, keyFiles: string[]): Promise<SignedManifest> {
  let m = manifest
  for (const path of keyFiles) {
    m = await signManifest(m, await readPrivateKey(path))
  }
  return m
}

async function readPolicy (path: string): Promise<TrustPolicy> {
  const bytes = await readBytes(path, 1_048_576)
  let json: { policy?: unknown }
  try {
    json = JSON.parse(new TextDecoder().decode(bytes)) as { policy?: unknown }
  } catch (err) {
    throw new CliError(`${path}: not JSON (${(err as Error).message})`)
  }
  try {
    // a genesis file (molt init) or just its "policy" object
    return genesisFromJSON({ system: 'policy', createdAt: 0, classes: [], policy: json?.policy ?? json }).policy
  } catch (err) {
    throw new CliError(`${path}: ${(err as Error).message}`)
  }
}

const create: Command = {
  summary: 'build an unsigned manifest file, for offline signing',
  help: `Usage: molt manifest create --out FILE --upgrade OLD[:NEW]=CID:SIZE...
         (--data DIR | --genesis GENESIS [--version N --previous CID]
                     | --system NAME --version N --previous CID)
         [--schedule NAME] [--param KEY=VALUE]... [--from-version N]
         [--policy FILE] [--created-at MS] [--force]

Builds the body of version N (unsigned) and writes it to FILE. Co-signers then
add their signatures with molt sign, one after another, offline; the manifest's
CID (printed) never changes when a signature is added.

Where the new version goes:
  --data DIR             the next version after the head of the node running
                         on DIR (asked through its admin socket)
  --genesis GENESIS      the system of this genesis file; without --version,
                         version 1 after the genesis
  --system NAME          the system's name (with --version and --previous)
  --version N            the new version
  --previous CID         the body CID of version N-1

What it does:
  --upgrade OLD[:NEW]=CID:SIZE
                         nodes of class OLD move to class NEW (default: OLD)
                         with the bundle CID of SIZE bytes (repeatable)
  --schedule NAME        scheduling function of every class upgrade
                         (default: eager; bundle:<export> for a custom SF)
  --param KEY=VALUE      a parameter of the schedule (repeatable)
  --from-version N       the class upgrades apply to nodes at version N
                         (fix forward past a broken version)
  --policy FILE          a trust-policy change (a genesis file from molt init,
                         or a JSON {root, release} policy): needs the current
                         and the new root thresholds of signatures
  --created-at MS        milliseconds since the epoch (default: now)
  --out FILE             where to write the manifest (required)
  --force                replace FILE if it exists
  -h, --help             show this help`,
  options: {
    out: { type: 'string', short: 'o' },
    data: { type: 'string' },
    genesis: { type: 'string' },
    system: { type: 'string' },
    version: { type: 'string' },
    previous: { type: 'string' },
    upgrade: { type: 'string', multiple: true },
    ...UPGRADE_OPTIONS,
    policy: { type: 'string' },
    'created-at': { type: 'string' },
    force: { type: 'boolean' }
  },
  async run (args, io) {
    const out = required(args, 'out', 'the manifest file to write')
    const sources = ['data', 'genesis', 'system'].filter(o => str(args, o) != null)
    if (sources.length !== 1) {
      throw new UsageError('give exactly one of --data, --genesis or --system')
    }
    let system: string
    let version: number
    let previous: CID
    const data = str(args, 'data')
    const genesisPath = str(args, 'genesis')
    if (data != null) {
      if (str(args, 'version') != null || str(args, 'previous') != null) {
        throw new UsageError('--data takes the version and previous from the node: drop --version and --previous')
      }
      const status = await adminRequest(data, { op: 'status' })
      system = status.system
      version = status.version + 1
      previous = parseCid(status.head, 'the node\'s head')
    } else if (genesisPath != null) {
      const genesis = await genesisManifest(await readGenesis(genesisPath))
      system = genesis.body.system
      version = int(args, 'version', 1, 1)
      if (version === 1) {
        previous = str(args, 'previous') != null ? parseCid(required(args, 'previous'), '--previous') : genesis.cid
      } else {
        previous = parseCid(required(args, 'previous', 'the body CID of version N-1'), '--previous')
      }
    } else {
      system = parseName(required(args, 'system'), '--system')
      version = int(args, 'version', undefined, 1) ?? (() => { throw new UsageError('--version is required with --system') })()
      previous = parseCid(required(args, 'previous', 'the body CID of version N-1'), '--previous')
    }
    const upgrades = classUpgrades(args, list(args, 'upgrade').map(u => {
      const i = u.indexOf('=')
      if (i <= 0) {
        throw new UsageError(`--upgrade: expected OLD[:NEW]=CID:SIZE, got ${JSON.stringify(u)}`)
      }
      return { ...parseClassPair(u.slice(0, i), '--upgrade'), ...parseBundleRef(u.slice(i + 1), '--upgrade') }
    }))
    const policyPath = str(args, 'policy')
    const body: ManifestBody = {
      system,
      version,
      previous,
      classUpgrades: upgrades,
      createdAt: int(args, 'created-at', Date.now()),
      ...(policyPath != null ? { policy: await readPolicy(policyPath) } : {})
    }
    if (upgrades.length === 0 && body.policy == null) {
      io.err('molt: manifest create: note: no --upgrade given; every node just advances its version number')
    }
    const manifest = await buildManifest(body)
    await writeManifest(out, manifest, flag(args, 'force'))
    io.out(`${out}: manifest ${version} of ${system}: ${manifest.cid.toString()} (unsigned)`)
    return 0
  }
}

/** A JSON view of a manifest: CIDs as strings, keys and signatures in base64. */
export function manifestToJSON (m: SignedManifest): unknown {
  const role = (r: TrustPolicy['root']): unknown => ({ keys: r.keys.map(b64), threshold: r.threshold })
  return {
    cid: m.cid.toString(),
    system: m.body.system,
    version: m.body.version,
    previous: m.body.previous?.toString() ?? null,
    createdAt: m.body.createdAt,
    classUpgrades: m.body.classUpgrades.map(u => ({ ...u, bundle: u.bundle.toString() })),
    ...(m.body.policy != null ? { policy: { root: role(m.body.policy.root), release: role(m.body.policy.release) } } : {}),
    signatures: m.signatures.map(s => ({ publicKey: b64(s.publicKey), signature: b64(s.signature) }))
  }
}

const show: Command = {
  summary: 'print a manifest file',
  help: `Usage: molt manifest show FILE [--json]

Prints a manifest file: its CID, version, previous, class upgrades, any policy
change and the keys that signed it. Signatures are not checked here (see
molt manifest verify).

Options:
  --json       print JSON instead
  -h, --help   show this help`,
  options: { json: { type: 'boolean' } },
  positionals: { min: 1, max: 1, names: 'the manifest FILE' },
  async run (args, io) {
    const m = await readManifest(args.positionals[0] as string)
    if (flag(args, 'json')) {
      io.out(JSON.stringify(manifestToJSON(m), null, 2))
      return 0
    }
    io.out(`manifest    ${m.cid.toString()}`)
    io.out(`system      ${m.body.system}`)
    io.out(`version     ${m.body.version}`)
    io.out(`previous    ${m.body.previous?.toString() ?? '(none: genesis)'}`)
    io.out(`created     ${new Date(m.body.createdAt).toISOString()} (${m.body.createdAt})`)
    if (m.body.classUpgrades.length === 0) {
      io.out('upgrades    (none: nodes only advance their version)')
    }
    for (const u of m.body.classUpgrades) {
      const params = u.schedule.params != null ? ` ${JSON.stringify(u.schedule.params)}` : ''
      const from = u.fromVersion != null ? `, from version ${u.fromVersion}` : ''
      io.out(`upgrade     ${u.oldClass} -> ${u.newClass}: bundle ${u.bundle.toString()} (${u.bundleSize} bytes), schedule ${u.schedule.name}${params}${from}`)
    }
    if (m.body.policy != null) {
      const p = m.body.policy
      io.out(`policy      root ${p.root.threshold} of ${p.root.keys.length}, release ${p.release.threshold} of ${p.release.keys.length}`)
      for (const k of p.root.keys) {
        io.out(`  root      ${b64(k)}`)
      }
      for (const k of p.release.keys) {
        io.out(`  release   ${b64(k)}`)
      }
    }
    io.out(`signatures  ${m.signatures.length}`)
    for (const s of m.signatures) {
      io.out(`  signed by ${b64(s.publicKey)}`)
    }
    return 0
  }
}

const verify: Command = {
  summary: 'check a manifest file\'s signatures',
  help: `Usage: molt manifest verify FILE (--genesis GENESIS | --data DIR)

Checks that every signature of the manifest verifies and comes from an
authorized key, and that enough distinct release keys (and, for a policy
change, root keys) signed.

  --genesis GENESIS   under the genesis policy (offline). A policy changed by a
                      later manifest is not known this way: use --data
  --data DIR          under the policy that the chain of the node running on
                      DIR has in force for the manifest's version; also tells
                      whether it chains onto that node's version N-1
  -h, --help          show this help

Exits 0 when the manifest is valid, 1 when it is not.`,
  options: { genesis: { type: 'string' }, data: { type: 'string' } },
  positionals: { min: 1, max: 1, names: 'the manifest FILE' },
  async run (args, io) {
    const file = args.positionals[0] as string
    const genesisPath = str(args, 'genesis')
    const data = str(args, 'data')
    if ((genesisPath == null) === (data == null)) {
      throw new UsageError('give one of --genesis or --data')
    }
    const m = await readManifest(file)
    const what = `${file}: manifest ${m.body.version} (${m.cid.toString()})`
    if (data != null) {
      const r = await adminRequest(data, { op: 'verify', manifest: b64(encodeSignedManifest(m)) })
      if (r.version === 0) {
        io.out(`${what}: the node's genesis`)
        return 0
      }
      const chains = r.chains == null ? '' : r.chains ? `; chains onto the node's version ${r.version - 1}` : `; does NOT chain onto the node's version ${r.version - 1}`
      const stored = r.stored == null ? '' : r.stored === r.cid ? '; the node has it' : `; the node has a DIFFERENT body at this version (${r.stored})`
      io.out(`${what}: valid: ${r.signers.length} authorized signer(s), release threshold ${r.releaseThreshold}${chains}${stored}`)
      return r.chains === false || (r.stored != null && r.stored !== r.cid) ? 1 : 0
    }
    const config = await readGenesis(genesisPath as string)
    const genesis = await genesisManifest(config)
    if (m.body.system !== genesis.body.system) {
      throw new CliError(`${what}: for system "${m.body.system}", the genesis is of "${genesis.body.system}"`)
    }
    if (m.body.version === 0) {
      if (m.cid.toString() !== genesis.cid.toString()) {
        throw new CliError(`${what}: not this genesis (${genesis.cid.toString()})`)
      }
      io.out(`${what}: the genesis`)
      return 0
    }
    let signers: Set<string>
    try {
      signers = await verifyManifest(m, config.policy)
    } catch (err) {
      throw new CliError(`${what}: invalid: ${(err as Error).name}: ${(err as Error).message}`)
    }
    const link = m.body.version === 1
      ? (m.body.previous?.equals(genesis.cid) === true ? '; chains onto the genesis' : '; does NOT chain onto the genesis')
      : ''
    io.out(`${what}: valid under the genesis policy: ${signers.size} authorized signer(s), release threshold ${config.policy.release.threshold}${link}`)
    return link.includes('NOT') ? 1 : 0
  }
}

export const manifest: Record<string, Command> = { create, show, verify }

export const sign: Command = {
  summary: 'add signatures to a manifest file (offline co-signing)',
  help: `Usage: molt sign --key KEY... FILE [--out OUT] [--force]

Adds the signature of each key file to the manifest FILE, in place (or writes
the result to OUT). Signing is offline and incremental: each co-signer adds
theirs; the manifest's CID never changes. Signing again with the same key
replaces that key's signature.

Options:
  --key KEY    a private key file from molt keygen (repeatable)
  --out OUT    write the signed manifest here instead of replacing FILE
  --force      replace OUT if it exists
  -h, --help   show this help`,
  options: {
    key: { type: 'string', short: 'k', multiple: true },
    out: { type: 'string', short: 'o' },
    force: { type: 'boolean' }
  },
  positionals: { min: 1, max: 1, names: 'the manifest FILE' },
  async run (args, io) {
    const file = args.positionals[0] as string
    const keys = list(args, 'key')
    if (keys.length === 0) {
      throw new UsageError('--key is required (a private key file; repeatable)')
    }
    const before = await readManifest(file)
    const signed = await signWith(before, keys)
    const out = str(args, 'out')
    const target = out ?? file
    // replacing the input itself is the point of signing in place
    await writeManifest(target, signed, out == null || resolve(out) === resolve(file) || flag(args, 'force'))
    io.out(`${target}: manifest ${signed.body.version} (${signed.cid.toString()}): ${signed.signatures.length} signature(s)`)
    return 0
  }
}

/** Decodes a base64 manifest from an admin reply. */
export async function manifestFromBase64 (value: string): Promise<SignedManifest> {
  return await decodeSignedManifest(fromString(value, 'base64'))
}
