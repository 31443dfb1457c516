/**
 * `molt keygen` and `molt init`.
 */
import { resolve } from 'node:path'
import { bundleOf } from './pack.ts'
import { genesisManifest, genesisToJSON, validatePolicy, type GenesisClass, type GenesisConfig, type KeyRole } from '../manifest/index.ts'
import {
  flag, int, list, newKeyFile, parseBundleRef, parseName, readPublicKey, required, UsageError, writeFileAtomic,
  type Command, type ParsedArgs
} from './util.ts'

export const keygen: Command = {
  summary: 'make an ed25519 signing key',
  help: `Usage: molt keygen --out FILE [--force]

Makes an ed25519 key for signing manifests (a release key) or policy changes (a
root key), writes it to FILE (JSON, mode 0600) and prints its public key: the
base64 string that genesis policies list (molt init --root-key/--release-key).

Options:
  --out FILE   where to write the key (required)
  --force      replace FILE if it exists
  -h, --help   show this help`,
  options: {
    out: { type: 'string', short: 'o' },
    force: { type: 'boolean' }
  },
  async run (args, io) {
    const out = required(args, 'out', 'the key file to write')
    const key = await newKeyFile()
    await writeFileAtomic(out, JSON.stringify(key, null, 2) + '\n', { mode: 0o600, force: flag(args, 'force') })
    io.out(key.publicKey)
    return 0
  }
}

async function role (args: ParsedArgs, name: 'root' | 'release'): Promise<KeyRole> {
  const given = list(args, `${name}-key`)
  if (given.length === 0) {
    throw new UsageError(`--${name}-key is required (a public key or key file; repeat it for several keys)`)
  }
  const keys = await Promise.all(given.map(async k => await readPublicKey(k, `--${name}-key`)))
  const threshold = int(args, `${name}-threshold`, undefined, 1)
  if (threshold == null && keys.length > 1) {
    throw new UsageError(`--${name}-threshold is required with ${keys.length} ${name} keys (how many must sign)`)
  }
  const t = threshold ?? 1
  if (t > keys.length) {
    throw new UsageError(`--${name}-threshold ${t} is more than the ${keys.length} ${name} key(s) given`)
  }
  return { keys, threshold: t }
}

export const init: Command = {
  summary: 'write a genesis configuration',
  help: `Usage: molt init --system NAME --root-key KEY... [--root-threshold K]
                 --release-key KEY... [--release-threshold K]
                 [--class NAME=CID:SIZE]... [--class-bundle NAME=DIR]...
                 [--created-at MS] --out FILE [--force]

Writes the genesis configuration of a new system (version 0): its name, its
first trust policy and the classes nodes start with. Every node of the system
is started with this file; the CID it prints names the system's history.

A KEY is a public key as molt keygen prints it, or the path of a key file.
Root keys only change the trust policy; release keys sign manifests.

Options:
  --system NAME            the system's name (a-z, 0-9, ".", "_", "-")
  --root-key KEY           a root key (repeat for several)
  --root-threshold K       root keys that must sign a policy change
                           (required with more than one root key)
  --release-key KEY        a release key (repeat for several)
  --release-threshold K    release keys that must sign a manifest
                           (required with more than one release key)
  --class NAME=CID:SIZE    a class of version 0 and its bundle's root CID and
                           size in bytes (repeat for several classes)
  --class-bundle NAME=DIR  a class of version 0 whose bundle is the directory
                           DIR (its CID and size are computed here; serve it
                           with molt node --pack DIR)
  --created-at MS          milliseconds since the epoch (default: now)
  --out FILE               where to write the configuration (required)
  --force                  replace FILE if it exists
  -h, --help               show this help`,
  options: {
    system: { type: 'string' },
    'root-key': { type: 'string', multiple: true },
    'root-threshold': { type: 'string' },
    'release-key': { type: 'string', multiple: true },
    'release-threshold': { type: 'string' },
    class: { type: 'string', multiple: true },
    'class-bundle': { type: 'string', multiple: true },
    'created-at': { type: 'string' },
    out: { type: 'string', short: 'o' },
    force: { type: 'boolean' }
  },
  async run (args, io) {
    const system = parseName(required(args, 'system', 'the system\'s name'), '--system')
    const out = required(args, 'out', 'the genesis file to write')
    const root = await role(args, 'root')
    const release = await role(args, 'release')
    const classes: GenesisClass[] = []
    for (const c of list(args, 'class')) {
      const i = c.indexOf('=')
      if (i <= 0) {
        throw new UsageError(`--class: expected NAME=CID:SIZE, got ${JSON.stringify(c)}`)
      }
      const name = parseName(c.slice(0, i), '--class')
      if (classes.some(k => k.name === name)) {
        throw new UsageError(`--class: class ${name} is given twice`)
      }
      classes.push({ name, ...parseBundleRef(c.slice(i + 1), `--class ${name}`) })
    }
    for (const c of list(args, 'class-bundle')) {
      const i = c.indexOf('=')
      if (i <= 0 || i === c.length - 1) {
        throw new UsageError(`--class-bundle: expected NAME=DIR, got ${JSON.stringify(c)}`)
      }
      const name = parseName(c.slice(0, i), '--class-bundle')
      if (classes.some(k => k.name === name)) {
        throw new UsageError(`--class-bundle: class ${name} is given twice`)
      }
      const { cid, size } = await bundleOf(system, resolve(c.slice(i + 1)))
      io.err(`molt: init: class ${name}: bundle ${cid.toString()}:${size}`)
      classes.push({ name, bundle: cid, bundleSize: size })
    }
    const config: GenesisConfig = {
      system,
      policy: { root, release },
      classes,
      createdAt: int(args, 'created-at', Date.now())
    }
    try {
      validatePolicy(config.policy)
    } catch (err) {
      throw new UsageError((err as Error).message)
    }
    const genesis = await genesisManifest(config)
    await writeFileAtomic(out, JSON.stringify(genesisToJSON(config), null, 2) + '\n', { force: flag(args, 'force') })
    io.out(`${out}: genesis of system ${system}: ${genesis.cid.toString()}`)
    if (classes.length === 0) {
      io.err('molt: init: note: no --class given; version 0 runs no class')
    }
    return 0
  }
}
