/**
 * What every `molt` command shares: its I/O, its two kinds of failure, argument parsing and the
 * files it reads and writes (keys, genesis configurations, manifests).
 */
import { chmod, open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { dirname, basename, join } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf, publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { CID } from 'multiformats/cid'
import { fromString } from 'uint8arrays/from-string'
import { toString } from 'uint8arrays/to-string'
import {
  decodeSignedManifest, encodeSignedManifest, genesisFromJSON, MAX_MANIFEST_BYTES,
  type GenesisConfig, type SignedManifest
} from '../manifest/index.ts'
import type { PrivateKey } from '@libp2p/interface'

/**
 * Where a command writes. `out` gets results (one line per call), `err` progress and errors.
 */
export interface CliIO {
  out(line: string): void
  err(line: string): void
  /** aborting it stops long-running commands (`molt node`, `molt publish`) cleanly */
  signal?: AbortSignal
}

/** A bad argument or option: exit status 2. */
export class UsageError extends Error {
  static override readonly name = 'UsageError'
  override readonly name = 'UsageError'
}

/** A failure while running (unreadable file, invalid manifest, node unreachable): exit status 1. */
export class CliError extends Error {
  static override readonly name = 'CliError'
  override readonly name = 'CliError'
}

/** One command or sub-command. */
export interface Command {
  /** one line for `molt --help` */
  summary: string
  /** the full `--help` text */
  help: string
  options: NonNullable<ParseArgsConfig['options']>
  /** how many positionals it takes */
  positionals?: { min: number, max: number, names: string }
  run(args: ParsedArgs, io: CliIO): Promise<number>
}

/** Parsed options and positionals. */
export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>
  positionals: string[]
}

/**
 * Strict parsing, with node:util's long messages cut to one line.
 */
export function parse (command: Command, argv: string[]): ParsedArgs {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: { ...command.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
  } catch (err) {
    const e = err as Error & { code?: string }
    const quoted = /'([^']+)'/.exec(e.message)?.[1]
    switch (e.code) {
      case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
        throw new UsageError(`unknown option ${quoted ?? ''}`.trim())
      case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
        throw new UsageError(quoted != null && /argument missing/.test(e.message)
          ? `option ${/--[\w-]+/.exec(quoted)?.[0] ?? quoted} needs a value`
          : (e.message.split('. ')[0] ?? e.message))
      default:
        throw new UsageError(e.message.split('. ')[0] ?? e.message)
    }
  }
  const positionals = parsed.positionals
  if (parsed.values.help !== true && command.positionals != null) {
    const { min, max, names } = command.positionals
    if (positionals.length < min) {
      throw new UsageError(`missing ${names}`)
    }
    if (positionals.length > max) {
      throw new UsageError(`unexpected argument ${JSON.stringify(positionals[max])}`)
    }
  } else if (parsed.values.help !== true && positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`)
  }
  return { values: parsed.values, positionals }
}

/* ---------------------------------------------------------------- option values */

export function str (args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name]
  return typeof v === 'string' ? v : undefined
}

export function required (args: ParsedArgs, name: string, what = 'a value'): string {
  const v = str(args, name)
  if (v == null || v === '') {
    throw new UsageError(`--${name} is required (${what})`)
  }
  return v
}

export function list (args: ParsedArgs, name: string): string[] {
  const v = args.values[name]
  return Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : []
}

export function flag (args: ParsedArgs, name: string): boolean {
  return args.values[name] === true
}

/** A non-negative safe integer from an option, or the default. */
export function int (args: ParsedArgs, name: string, fallback: number, min?: number): number
export function int (args: ParsedArgs, name: string, fallback: undefined, min?: number): number | undefined
export function int (args: ParsedArgs, name: string, fallback: number | undefined, min = 0): number | undefined {
  const v = str(args, name)
  if (v == null) {
    return fallback
  }
  return parseInteger(v, `--${name}`, min)
}

export function parseInteger (value: string, what: string, min = 0): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${what}: expected an integer ≥ ${min}, got ${JSON.stringify(value)}`)
  }
  return n
}

/** Seconds (decimals allowed) from an option, in milliseconds. */
export function seconds (args: ParsedArgs, name: string, fallback: number): number {
  const v = str(args, name)
  if (v == null) {
    return fallback * 1000
  }
  const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : NaN
  if (!Number.isFinite(n) || n * 1000 > 2 ** 31 - 1) {
    throw new UsageError(`--${name}: expected a number of seconds, got ${JSON.stringify(v)}`)
  }
  return Math.round(n * 1000)
}

export function parseCid (value: string, what: string): CID {
  try {
    const cid = CID.parse(value)
    if (cid.version !== 1) {
      throw new Error('not a CIDv1')
    }
    return cid
  } catch (err) {
    throw new UsageError(`${what}: ${JSON.stringify(value)} is not a CIDv1 (${(err as Error).message})`)
  }
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/

/** A system or class name, as manifests accept them. */
export function parseName (value: string, what: string): string {
  if (!NAME.test(value)) {
    throw new UsageError(`${what}: ${JSON.stringify(value)} is not a name (1-64 characters of a-z, 0-9, ".", "_", "-")`)
  }
  return value
}

/** `CID:SIZE` */
export function parseBundleRef (value: string, what: string): { bundle: CID, bundleSize: number } {
  const i = value.lastIndexOf(':')
  if (i <= 0) {
    throw new UsageError(`${what}: expected CID:SIZE, got ${JSON.stringify(value)}`)
  }
  return { bundle: parseCid(value.slice(0, i), what), bundleSize: parseInteger(value.slice(i + 1), `${what} size`) }
}

/** `OLD[:NEW]` */
export function parseClassPair (value: string, what: string): { oldClass: string, newClass: string } {
  const [oldClass = '', newClass = oldClass, ...rest] = value.split(':')
  if (rest.length > 0) {
    throw new UsageError(`${what}: expected OLD or OLD:NEW, got ${JSON.stringify(value)}`)
  }
  return { oldClass: parseName(oldClass, what), newClass: parseName(newClass, what) }
}

/** `--param K=V`: numbers, true/false and null are typed; anything else is a string. */
export function parseParams (values: string[]): Record<string, string | number | boolean | null> | undefined {
  if (values.length === 0) {
    return undefined
  }
  const params: Record<string, string | number | boolean | null> = {}
  for (const v of values) {
    const i = v.indexOf('=')
    if (i <= 0) {
      throw new UsageError(`--param: expected KEY=VALUE, got ${JSON.stringify(v)}`)
    }
    const key = v.slice(0, i)
    const raw = v.slice(i + 1)
    params[key] = raw === 'true' ? true : raw === 'false' ? false : raw === 'null' ? null : /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw
  }
  return params
}

/* ---------------------------------------------------------------- files */

function describeFsError (path: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code
  switch (code) {
    case 'ENOENT': return `${path}: no such file`
    case 'EACCES': case 'EPERM': return `${path}: permission denied`
    case 'EISDIR': return `${path}: is a directory`
    case 'ENOTDIR': return `${path}: a part of the path is not a directory`
    case 'EEXIST': return `${path}: already exists`
    default: return `${path}: ${(err as Error).message}`
  }
}

export async function readBytes (path: string, maxBytes: number): Promise<Uint8Array> {
  try {
    const info = await stat(path)
    if (info.isDirectory()) {
      throw Object.assign(new Error('is a directory'), { code: 'EISDIR' })
    }
    if (info.size > maxBytes) {
      throw new CliError(`${path}: ${info.size} bytes is more than the ${maxBytes} allowed`)
    }
    return new Uint8Array(await readFile(path))
  } catch (err) {
    if (err instanceof CliError) {
      throw err
    }
    throw new CliError(describeFsError(path, err))
  }
}

async function readJSON (path: string, maxBytes = 1_048_576): Promise<unknown> {
  const bytes = await readBytes(path, maxBytes)
  try {
    return JSON.parse(new TextDecoder().decode(bytes))
  } catch (err) {
    throw new CliError(`${path}: not JSON (${(err as Error).message})`)
  }
}

/**
 * Writes a file whole or not at all (a temporary file renamed over the target). Without `force`,
 * refuses an existing target.
 */
export async function writeFileAtomic (path: string, data: Uint8Array | string, options: { mode?: number, force?: boolean } = {}): Promise<void> {
  const mode = options.mode ?? 0o644
  if (options.force !== true) {
    try {
      await stat(path)
      throw new CliError(`${path}: already exists (use --force to replace it)`)
    } catch (err) {
      if (err instanceof CliError) {
        throw err
      }
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new CliError(describeFsError(path, err))
      }
    }
  }
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`)
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' })
    await chmod(tmp, mode)
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw new CliError(describeFsError(path, err))
  }
}

/** Reads and parses a genesis configuration file. */
export async function readGenesis (path: string): Promise<GenesisConfig> {
  const json = await readJSON(path)
  try {
    return genesisFromJSON(json)
  } catch (err) {
    throw new CliError(`${path}: ${(err as Error).message}`)
  }
}

/** Reads and decodes a manifest file (the bytes of `encodeSignedManifest`). */
export async function readManifest (path: string): Promise<SignedManifest> {
  const bytes = await readBytes(path, MAX_MANIFEST_BYTES)
  try {
    return await decodeSignedManifest(bytes)
  } catch (err) {
    throw new CliError(`${path}: not a valid manifest (${(err as Error).name}: ${(err as Error).message})`)
  }
}

export async function writeManifest (path: string, manifest: SignedManifest, force: boolean): Promise<void> {
  await writeFileAtomic(path, encodeSignedManifest(manifest), { force })
}

/* ---------------------------------------------------------------- keys */

/** The tag of molt key files. */
export const KEY_FILE_FORMAT = 'molt-key/1'

/** A key file's content. */
export interface KeyFile {
  format: string
  type: 'Ed25519'
  /** base64 (no padding) of the protobuf-encoded private key */
  privateKey: string
  /** base64 (no padding) of the protobuf-encoded public key: what genesis policies list */
  publicKey: string
}

export function b64 (bytes: Uint8Array): string {
  return toString(bytes, 'base64')
}

function fromB64 (value: string): Uint8Array {
  return fromString(value.trim().replace(/=+$/, ''), 'base64')
}

/** Makes a new ed25519 key and its file content. */
export async function newKeyFile (): Promise<KeyFile> {
  const key = await generateKeyPair('Ed25519')
  return { format: KEY_FILE_FORMAT, type: 'Ed25519', privateKey: b64(privateKeyToProtobuf(key)), publicKey: b64(publicKeyToProtobuf(key.publicKey)) }
}

/**
 * Reads a private key file, refusing one that others can read (as ssh does).
 */
export async function readPrivateKey (path: string): Promise<PrivateKey> {
  let mode = 0
  try {
    mode = (await stat(path)).mode
  } catch (err) {
    throw new CliError(describeFsError(path, err))
  }
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new CliError(`${path}: permissions ${(mode & 0o777).toString(8).padStart(4, '0')} are too open; a key must be readable by its owner only (chmod 600 ${path})`)
  }
  const json = await readJSON(path, 65_536) as Partial<KeyFile> | null
  if (json == null || typeof json !== 'object' || json.format !== KEY_FILE_FORMAT || typeof json.privateKey !== 'string') {
    throw new CliError(`${path}: not a molt key file (make one with molt keygen)`)
  }
  try {
    const key = privateKeyFromProtobuf(fromB64(json.privateKey))
    if (key.type !== 'Ed25519') {
      throw new Error(`${key.type} keys are not accepted, only Ed25519`)
    }
    return key
  } catch (err) {
    throw new CliError(`${path}: the private key does not decode (${(err as Error).message})`)
  }
}

/**
 * A public key given on the command line: the base64 protobuf encoding `molt keygen` prints, or
 * the path of a key file (its public half is used; the file's permissions do not matter then).
 * Returns the protobuf bytes.
 */
export async function readPublicKey (value: string, what: string): Promise<Uint8Array> {
  let text = value
  let source = JSON.stringify(value)
  const isFile = await stat(value).then(s => s.isFile(), () => false)
  if (isFile) {
    source = value
    const raw = new TextDecoder().decode(await readBytes(value, 65_536)).trim()
    if (raw.startsWith('{')) {
      let json: Partial<KeyFile>
      try {
        json = JSON.parse(raw) as Partial<KeyFile>
      } catch (err) {
        throw new CliError(`${what}: ${value}: not JSON (${(err as Error).message})`)
      }
      if (typeof json.publicKey !== 'string') {
        throw new CliError(`${what}: ${value}: not a molt key file`)
      }
      text = json.publicKey
    } else {
      text = raw
    }
  }
  try {
    const key = publicKeyFromProtobuf(fromB64(text))
    if (key.type !== 'Ed25519') {
      throw new Error(`${key.type} keys are not accepted, only Ed25519`)
    }
    return publicKeyToProtobuf(key)
  } catch (err) {
    throw new UsageError(`${what}: ${source} is neither a key file nor a base64 public key (${(err as Error).message})`)
  }
}

/** Whether `path` exists. */
export async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

/** Opens a file exclusively, to fail early when it cannot be written (used before slow work). */
export async function assertWritable (path: string, force: boolean): Promise<void> {
  if (!force && await exists(path)) {
    throw new CliError(`${path}: already exists (use --force to replace it)`)
  }
  const dir = dirname(path)
  try {
    const handle = await open(dir, 'r')
    await handle.close()
  } catch (err) {
    throw new CliError(describeFsError(dir, err))
  }
}
