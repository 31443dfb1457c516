/**
 * The node's admin socket: how the `molt` command (or any local tool) drives a running node.
 *
 * The socket is a unix-domain socket, `<dataDir>/admin.sock`, that only the node's owner can use:
 *
 * - the data directory is made `0700` and the socket `0600`, so other users cannot reach it;
 * - every request must also carry the token the node wrote to `<dataDir>/admin.token` (`0600`,
 *   fresh at every start), compared in constant time. The token keeps the socket closed where
 *   file permissions on sockets are not enforced, or when the socket is moved or bind-mounted
 *   somewhere more open; it is no defence against the owner's own processes, which can read it.
 *
 * The protocol is newline-delimited JSON, one request per connection: the client sends one line,
 * `{ "token", "op", ... }`; the node answers zero or more `{ "type": "progress", ... }` lines and
 * then one `{ "type": "result", "result" }` or `{ "type": "error", "error": { "name", "message" } }`
 * line, and closes. A request larger than the limit, malformed, unauthenticated or failing gets a
 * typed error reply; it never stops the node.
 *
 * @packageDocumentation
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { chmod, lstat, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import { isAbsolute, join } from 'node:path'
import { logger } from '@libp2p/logger'
import { fromString } from 'uint8arrays/from-string'
import { toString } from 'uint8arrays/to-string'
import { CID } from 'multiformats/cid'
import { tryUpgrade, type DryRunBundle, type DryRunReport } from '../manager/dry-run.ts'
import { decodeSignedControl, decodeSignedManifest, encodeSignedManifest, MAX_MANIFEST_BYTES, verifyManifest, type RolloutControl } from '../manifest/index.ts'
import type { MoltNode, NodeStatus } from './index.ts'
import type { MoltStore } from '../state/index.ts'

const log = logger('molt:node:admin')

/** The socket's file name in the data directory. */
export const ADMIN_SOCKET = 'admin.sock'

/** The token's file name in the data directory. */
export const ADMIN_TOKEN = 'admin.token'

/** The longest unix socket path most platforms accept (108 bytes with the terminator on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = 103

/* ---------------------------------------------------------------- errors */

/** Base of every admin-socket failure. */
export class AdminError extends Error {
  static override readonly name: string = 'AdminError'
  override readonly name: string = 'AdminError'
}

/** No node answers on the data directory's admin socket (none is running, or it is another directory). */
export class AdminUnavailableError extends AdminError {
  static override readonly name = 'AdminUnavailableError'
  override readonly name = 'AdminUnavailableError'
}

/** The request's token is missing or wrong, or the socket's permissions refused the caller. */
export class AdminUnauthorizedError extends AdminError {
  static override readonly name = 'AdminUnauthorizedError'
  override readonly name = 'AdminUnauthorizedError'
}

/** The request is not valid JSON, names an unknown operation, or has malformed fields. */
export class AdminBadRequestError extends AdminError {
  static override readonly name = 'AdminBadRequestError'
  override readonly name = 'AdminBadRequestError'
}

/** The request (or a reply) is larger than the limit. */
export class AdminRequestTooLargeError extends AdminError {
  static override readonly name = 'AdminRequestTooLargeError'
  override readonly name = 'AdminRequestTooLargeError'
}

/** A live node already holds the data directory's admin socket, or its path is unusable. */
export class AdminSocketInUseError extends AdminError {
  static override readonly name = 'AdminSocketInUseError'
  override readonly name = 'AdminSocketInUseError'
}

/** The node refused to publish a manifest it cannot take (ahead of its head, halted, equivocating). */
export class PublishRefusedError extends AdminError {
  static override readonly name = 'PublishRefusedError'
  override readonly name = 'PublishRefusedError'
}

/** An operation did not finish before its deadline. */
export class AdminTimeoutError extends AdminError {
  static override readonly name = 'AdminTimeoutError'
  override readonly name = 'AdminTimeoutError'
}

/**
 * The node failed the request with an error that is not an admin error (e.g. a `ManifestError`
 * for an invalid manifest); `remoteName` is that error's stable `name`.
 */
export class AdminRemoteError extends AdminError {
  static override readonly name = 'AdminRemoteError'
  override readonly name = 'AdminRemoteError'
  readonly remoteName: string

  constructor (message: string, remoteName: string) {
    super(message)
    this.remoteName = remoteName
  }
}

const KNOWN_ERRORS: Record<string, new (message: string) => AdminError> = {
  AdminError,
  AdminUnavailableError,
  AdminUnauthorizedError,
  AdminBadRequestError,
  AdminRequestTooLargeError,
  AdminSocketInUseError,
  PublishRefusedError,
  AdminTimeoutError
}

/* ---------------------------------------------------------------- protocol types */

/**
 * A request to the admin socket. Manifests travel as base64 of `encodeSignedManifest`.
 */
export type AdminRequest =
  /** the node's status (`NodeStatus`) */
  | { op: 'status' }
  /** the node's head manifest */
  | { op: 'head' }
  /** verifies a manifest under the policy the node's chain has in force for its version */
  | { op: 'verify', manifest: string }
  /** packs a directory (absolute path) into the node's bundle store and provides it */
  | { op: 'pack', dir: string }
  /**
   * Publishes a manifest through the node, then, when `wait` > 0, waits until `wait` connected
   * peers report a head at or past its version (progress replies on the way), for at most
   * `timeoutMs`.
   */
  | { op: 'publish', manifest: string, wait?: number, timeoutMs?: number }
  /** applies and injects a signed control message (base64 of `encodeSignedControl`) */
  | { op: 'control', control: string }
  /**
   * Dry-runs an upgrade on a snapshot of the node's store (`tryUpgrade`): `bundle` is an absolute
   * directory path or the CID of a bundle the node holds; the other fields default to the node's
   * current class and version, the next version, the time of the request and seed 0.
   */
  | { op: 'try-upgrade', bundle: string, class?: string, newClass?: string, fromVersion?: number, toVersion?: number, now?: number, seed?: number, transformMs?: number }

/** What `verify` reports. */
export interface AdminVerifyResult {
  cid: string
  version: number
  /** base64 protobuf public keys of the distinct authorized signers */
  signers: string[]
  /** the release threshold of the policy the manifest was verified under */
  releaseThreshold: number
  /** whether the manifest names the node's stored version N-1 as previous; null at version 0 or past head + 1 */
  chains: boolean | null
  /** the node's stored body CID at this version, if any */
  stored: string | null
}

/** What `publish` reports. */
export interface AdminPublishResult {
  cid: string
  version: number
  /** how the node's chain took the manifest: `accepted`, `cosigned`, `duplicate` or `old` */
  verdict: string
  /** peer ids that reported the version (empty when `wait` was 0) */
  accepted: string[]
}

/** The result of each operation. */
export interface AdminResults {
  status: NodeStatus
  head: { manifest: string }
  verify: AdminVerifyResult
  pack: { cid: string, size: number }
  publish: AdminPublishResult
  control: AdminControlResult
  'try-upgrade': DryRunReport
}

/** What `control` reports. */
export interface AdminControlResult {
  cid: string
  seq: number
  /** how the node's control log took it: `accepted`, `old`, `conflict` or `ahead` */
  verdict: string
  /** the rollout control after it */
  state: RolloutControl
}

/** A progress report (only `publish` sends them): `accepted` of `wanted` peers so far. */
export interface AdminProgress {
  accepted: number
  wanted: number
}

type Reply =
  | { type: 'progress', progress: AdminProgress }
  | { type: 'result', result: unknown }
  | { type: 'error', error: { name: string, message: string } }

/* ---------------------------------------------------------------- paths */

/** The admin socket's path for a data directory. */
export function adminSocketPath (dataDir: string): string {
  return join(dataDir, ADMIN_SOCKET)
}

/** The admin token's path for a data directory. */
export function adminTokenPath (dataDir: string): string {
  return join(dataDir, ADMIN_TOKEN)
}

/**
 * Whether a node answers on this socket path: true when a connection succeeds, false when
 * nothing is there or nothing listens (a stale socket).
 */
async function isLive (path: string): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const socket = createConnection({ path })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => {
      socket.destroy()
      resolve(false)
    })
  })
}

/**
 * Throws `AdminSocketInUseError` when a live node holds the data directory's admin socket, or
 * when something other than a socket sits at its path. A stale socket (nobody listening) is not
 * an error: {@link startAdminServer} removes it.
 */
export async function assertAdminSocketFree (dataDir: string): Promise<void> {
  const path = adminSocketPath(dataDir)
  let info
  try {
    info = await lstat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return
    }
    throw err
  }
  if (!info.isSocket()) {
    throw new AdminSocketInUseError(`${path} exists and is not a socket; remove it`)
  }
  if (await isLive(path)) {
    throw new AdminSocketInUseError(`a node is already running on ${dataDir} (its admin socket answers)`)
  }
}

/* ---------------------------------------------------------------- server */

/**
 * Options of {@link startAdminServer}.
 */
export interface AdminServerOptions {
  /** the node's data directory; the socket and token are created in it */
  dataDir: string

  /**
   * Largest request accepted, in bytes (a manifest travels base64-encoded, so this must exceed
   * 4/3 of `MAX_MANIFEST_BYTES`).
   *
   * @default 262144
   */
  maxRequestBytes?: number

  /**
   * How long a client may take to send its request line.
   *
   * @default 10000
   */
  requestTimeoutMs?: number

  /**
   * Connections served at once; more are refused.
   *
   * @default 16
   */
  maxConnections?: number

  /**
   * Longest wait a `publish` request may ask for.
   *
   * @default 3600000
   */
  maxWaitMs?: number
}

/**
 * A running admin server.
 */
export interface AdminServer {
  /** the socket's path */
  readonly socketPath: string
  /** the token file's path */
  readonly tokenPath: string
  /** stops listening, ends every open request and removes the socket and token files */
  close(): Promise<void>
}

function tokenDigest (token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

function decodeManifestField (value: unknown, field: 'manifest' | 'control' = 'manifest'): Uint8Array {
  if (typeof value !== 'string' || value.length === 0) {
    throw new AdminBadRequestError(`${field}: expected the base64 of an encoded signed ${field === 'manifest' ? 'manifest' : 'control message'}`)
  }
  try {
    return fromString(value.replace(/=+$/, ''), 'base64')
  } catch {
    throw new AdminBadRequestError(`${field}: not base64`)
  }
}

function optionalCount (value: unknown, what: string, max: number): number | undefined {
  if (value === undefined) {
    return undefined
  }
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new AdminBadRequestError(`${what}: expected an integer from 0 to ${max}`)
  }
  return value
}

class AdminSocketServer implements AdminServer {
  readonly socketPath: string
  readonly tokenPath: string
  private readonly server: Server
  private readonly sockets = new Set<Socket>()
  private readonly closing = new AbortController()
  private readonly maxRequestBytes: number
  private readonly requestTimeoutMs: number
  private readonly maxWaitMs: number
  private readonly token: Buffer

  private readonly node: MoltNode

  constructor (node: MoltNode, options: AdminServerOptions, token: string) {
    this.node = node
    this.socketPath = adminSocketPath(options.dataDir)
    this.tokenPath = adminTokenPath(options.dataDir)
    this.maxRequestBytes = options.maxRequestBytes ?? 262_144
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000
    this.maxWaitMs = options.maxWaitMs ?? 3_600_000
    this.token = tokenDigest(token)
    this.server = createServer((socket) => { this.serve(socket) })
    this.server.maxConnections = options.maxConnections ?? 16
  }

  async listen (): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ path: this.socketPath, readableAll: false, writableAll: false }, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    this.server.on('error', (err) => { log.error('admin socket error - %e', err) })
    await chmod(this.socketPath, 0o600)
  }

  private serve (socket: Socket): void {
    this.sockets.add(socket)
    const controller = new AbortController()
    const signal = AbortSignal.any([controller.signal, this.closing.signal])
    socket.on('error', () => {})
    const timer = setTimeout(() => {
      this.reply(socket, errorReply(new AdminBadRequestError(`no complete request within ${this.requestTimeoutMs} ms`)), true)
    }, this.requestTimeoutMs)
    socket.on('close', () => {
      clearTimeout(timer)
      this.sockets.delete(socket)
      controller.abort(new AdminUnavailableError('the client went away'))
    })
    let buffered = Buffer.alloc(0)
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk])
      const end = buffered.indexOf(0x0a)
      if (end === -1 && buffered.byteLength <= this.maxRequestBytes) {
        return
      }
      clearTimeout(timer)
      socket.off('data', onData)
      if (end === -1 || end > this.maxRequestBytes) {
        this.reply(socket, errorReply(new AdminRequestTooLargeError(`the request exceeds ${this.maxRequestBytes} bytes`)), true)
        return
      }
      const line = buffered.subarray(0, end).toString('utf8')
      this.handle(line, socket, signal).then(
        result => { this.reply(socket, { type: 'result', result }, true) },
        err => { this.reply(socket, errorReply(err), true) }
      )
    }
    socket.on('data', onData)
  }

  private reply (socket: Socket, reply: Reply, end: boolean): void {
    if (socket.destroyed || socket.writableEnded) {
      return
    }
    const line = JSON.stringify(reply) + '\n'
    if (end) {
      socket.end(line)
      // a client that never closes its side is not left holding a connection slot
      setTimeout(() => { socket.destroy() }, 1000).unref()
    } else {
      socket.write(line)
    }
  }

  private async handle (line: string, socket: Socket, signal: AbortSignal): Promise<unknown> {
    let request: Record<string, unknown>
    try {
      const parsed: unknown = JSON.parse(line)
      if (parsed == null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        throw new Error('not an object')
      }
      request = parsed as Record<string, unknown>
    } catch (err) {
      throw new AdminBadRequestError(`the request is not a JSON object (${(err as Error).message})`)
    }
    if (typeof request.token !== 'string' || !timingSafeEqual(tokenDigest(request.token), this.token)) {
      log('refused an admin request with a wrong or missing token')
      throw new AdminUnauthorizedError('wrong or missing admin token')
    }
    const node = this.node
    switch (request.op) {
      case 'status':
        return node.status()
      case 'head':
        return { manifest: toString(encodeHead(node), 'base64') }
      case 'verify':
        return await this.verify(decodeManifestField(request.manifest))
      case 'pack': {
        if (typeof request.dir !== 'string' || !isAbsolute(request.dir)) {
          throw new AdminBadRequestError('dir: expected an absolute directory path')
        }
        const packed = await node.bundles.pack(request.dir)
        return { cid: packed.cid.toString(), size: packed.size }
      }
      case 'publish':
        return await this.publish(request, socket, signal)
      case 'control': {
        const control = await decodeSignedControl(decodeManifestField(request.control, 'control'))
        const verdict = await node.publishControl(control)
        return { cid: control.cid.toString(), seq: control.body.seq, verdict, state: node.controls.state() }
      }
      case 'try-upgrade':
        return await this.tryUpgrade(request, signal)
      default:
        throw new AdminBadRequestError(`unknown operation ${JSON.stringify(request.op)}`)
    }
  }

  private async verify (bytes: Uint8Array): Promise<AdminVerifyResult> {
    const { chain, system } = this.node
    const manifest = await decodeSignedManifest(bytes, MAX_MANIFEST_BYTES)
    const { version } = manifest.body
    if (manifest.body.system !== system) {
      throw new AdminBadRequestError(`the manifest is for system "${manifest.body.system}", this node runs "${system}"`)
    }
    const stored = chain.get(version)
    if (version === 0) {
      const genesis = chain.genesis.cid.toString()
      if (manifest.cid.toString() !== genesis) {
        throw new AdminBadRequestError(`version 0 is ${manifest.cid.toString()}, but this node's genesis is ${genesis}`)
      }
      return { cid: genesis, version, signers: [], releaseThreshold: 0, chains: null, stored: genesis }
    }
    if (version > chain.head().body.version + 1) {
      throw new AdminBadRequestError(`version ${version} is past this node's head + 1 (${chain.head().body.version + 1}); the policy in force there is not known yet`)
    }
    const policy = chain.policyFor(version)
    const signers = await verifyManifest(manifest, policy)
    const previous = chain.get(version - 1)
    return {
      cid: manifest.cid.toString(),
      version,
      signers: [...signers],
      releaseThreshold: policy.release.threshold,
      chains: previous == null ? null : manifest.body.previous?.equals(previous.cid) === true,
      stored: stored?.cid.toString() ?? null
    }
  }

  private async tryUpgrade (request: Record<string, unknown>, signal: AbortSignal): Promise<DryRunReport> {
    const store = this.node.store
    if (typeof request.bundle !== 'string' || request.bundle === '') {
      throw new AdminBadRequestError('bundle: expected an absolute directory path or a bundle CID')
    }
    let bundle: DryRunBundle
    if (isAbsolute(request.bundle)) {
      bundle = { dir: request.bundle }
    } else {
      try {
        bundle = CID.parse(request.bundle)
      } catch {
        throw new AdminBadRequestError(`bundle: ${JSON.stringify(request.bundle.slice(0, 100))} is neither an absolute directory path nor a CID`)
      }
    }
    const name = (field: string): string | undefined => {
      const value = request[field]
      if (value !== undefined && (typeof value !== 'string' || value === '')) {
        throw new AdminBadRequestError(`${field}: expected a class name`)
      }
      return value
    }
    const klass = name('class')
    const newClass = name('newClass')
    const fromVersion = optionalCount(request.fromVersion, 'fromVersion', Number.MAX_SAFE_INTEGER)
    const toVersion = optionalCount(request.toVersion, 'toVersion', Number.MAX_SAFE_INTEGER)
    const now = optionalCount(request.now, 'now', Number.MAX_SAFE_INTEGER)
    const seed = optionalCount(request.seed, 'seed', Number.MAX_SAFE_INTEGER)
    const transformMs = optionalCount(request.transformMs, 'transformMs', this.maxWaitMs)
    if (transformMs === 0) {
      throw new AdminBadRequestError('transformMs: expected a positive integer')
    }
    return await tryUpgrade(store, {
      bundle,
      bundles: this.node.bundles,
      signal,
      ...(klass != null ? { class: klass } : {}),
      ...(newClass != null ? { newClass } : {}),
      ...(fromVersion != null ? { fromVersion } : {}),
      ...(toVersion != null ? { toVersion } : {}),
      ...(now != null ? { now } : {}),
      ...(seed != null ? { seed } : {}),
      ...(transformMs != null ? { transformMs } : {})
    })
  }

  private async publish (request: Record<string, unknown>, socket: Socket, signal: AbortSignal): Promise<AdminPublishResult> {
    const manifest = await decodeSignedManifest(decodeManifestField(request.manifest), MAX_MANIFEST_BYTES)
    const wait = optionalCount(request.wait, 'wait', 1_000_000) ?? 0
    const timeoutMs = optionalCount(request.timeoutMs, 'timeoutMs', this.maxWaitMs) ?? this.maxWaitMs
    const { version } = manifest.body
    const { verdict } = await this.node.publish(manifest)
    const chain = this.node.chain
    switch (verdict) {
      case 'accepted':
      case 'cosigned':
      case 'duplicate':
      case 'old':
        break
      case 'ahead':
        throw new PublishRefusedError(`version ${version} is ahead of this node's head ${chain.head().body.version}: publish version ${chain.head().body.version + 1} first`)
      case 'halted':
        throw new PublishRefusedError(`the rollout is halted by a fork proof at version ${chain.halt?.version ?? '?'}; the root keys must resolve it first`)
      case 'equivocation':
        throw new PublishRefusedError(`version ${version} already has a different body (${chain.get(version)?.cid.toString() ?? '?'}): this manifest proves equivocation and the rollout is now halted`)
      default:
        throw new PublishRefusedError(`the node did not take the manifest (${verdict as string})`)
    }
    const result: AdminPublishResult = { cid: manifest.cid.toString(), version, verdict, accepted: [] }
    if (wait === 0) {
      return result
    }
    let seen = 0
    const deadline = AbortSignal.timeout(timeoutMs)
    try {
      const peers = await this.node.waitForAcceptance(version, wait, {
        signal: AbortSignal.any([signal, deadline]),
        onProgress: (accepted) => {
          seen = accepted
          this.reply(socket, { type: 'progress', progress: { accepted, wanted: wait } }, false)
        }
      })
      result.accepted = peers.map(p => p.toString())
      return result
    } catch (err) {
      if (deadline.aborted) {
        throw new AdminTimeoutError(`version ${version} (${result.cid}) was published, but only ${seen} of ${wait} peers reported it within ${timeoutMs} ms`)
      }
      throw err
    }
  }

  async close (): Promise<void> {
    this.closing.abort(new AdminUnavailableError('the node is stopping'))
    const closed = new Promise<void>(resolve => { this.server.close(() => { resolve() }) })
    for (const socket of this.sockets) {
      socket.destroy()
    }
    await closed
    await unlink(this.tokenPath).catch(() => {})
    // net.Server removes its socket file on close; make sure
    await unlink(this.socketPath).catch(() => {})
  }
}

/**
 * The store a node opened. `MoltNode` does not list it yet; the node built by `createMoltNode`
 * keeps it as `store`, read here when it has a store's shape.
 */
function encodeHead (node: MoltNode): Uint8Array {
  return encodeSignedManifest(node.head())
}

function errorReply (err: unknown): Reply {
  const error = err instanceof Error ? err : new Error(String(err))
  return { type: 'error', error: { name: error.name, message: error.message } }
}

/**
 * Opens a node's admin socket, `<dataDir>/admin.sock`, and writes a fresh token to
 * `<dataDir>/admin.token`. Makes the data directory `0700` (creating it when missing) and the
 * socket and token `0600`. Throws `AdminSocketInUseError` when a live node holds the socket;
 * a stale socket left by a crash is removed.
 *
 * @example
 * ```ts
 * const node = await createMoltNode({ genesis, dataDir })
 * const admin = await startAdminServer(node, { dataDir })
 * // ...
 * await admin.close()
 * await node.stop()
 * ```
 */
export async function startAdminServer (node: MoltNode, options: AdminServerOptions): Promise<AdminServer> {
  if (options == null || typeof options.dataDir !== 'string' || options.dataDir === '') {
    throw new AdminBadRequestError('dataDir: required')
  }
  const socketPath = adminSocketPath(options.dataDir)
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
    throw new AdminSocketInUseError(`the admin socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter data directory path`)
  }
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 })
  await chmod(options.dataDir, 0o700)
  await assertAdminSocketFree(options.dataDir)
  await unlink(socketPath).catch(() => {})

  const token = randomBytes(32).toString('hex')
  const tokenPath = adminTokenPath(options.dataDir)
  const tmp = `${tokenPath}.${process.pid}.tmp`
  await writeFile(tmp, token + '\n', { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, tokenPath)

  const server = new AdminSocketServer(node, options, token)
  try {
    await server.listen()
  } catch (err) {
    await unlink(tokenPath).catch(() => {})
    throw new AdminSocketInUseError(`cannot open the admin socket ${socketPath}: ${(err as Error).message}`)
  }
  log('admin socket open at %s', socketPath)
  return server
}

/* ---------------------------------------------------------------- client */

/**
 * Options of {@link adminRequest}.
 */
export interface AdminRequestOptions {
  /** called for each progress reply */
  onProgress?(progress: AdminProgress): void

  /** aborts the request (the node stops waiting on its side too) */
  signal?: AbortSignal

  /**
   * The token to present.
   *
   * @default the content of `<dataDir>/admin.token`
   */
  token?: string

  /**
   * Largest reply line accepted, in bytes.
   *
   * @default 1048576
   */
  maxReplyBytes?: number
}

async function readToken (dataDir: string): Promise<string> {
  try {
    return (await readFile(adminTokenPath(dataDir), 'utf8')).trim()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new AdminUnavailableError(`no molt node is running on ${dataDir} (no ${ADMIN_TOKEN})`)
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new AdminUnauthorizedError(`cannot read ${adminTokenPath(dataDir)}: permission denied (only the node's owner may drive it)`)
    }
    throw err
  }
}

/**
 * Sends one request to the node running on `dataDir` and resolves with its result. Rejects with
 * `AdminUnavailableError` when no node answers, `AdminUnauthorizedError` when it refuses the
 * token, the admin error the node names, or `AdminRemoteError` for any other failure there.
 */
export async function adminRequest<R extends AdminRequest> (dataDir: string, request: R, options: AdminRequestOptions = {}): Promise<AdminResults[R['op']]> {
  const token = options.token ?? await readToken(dataDir)
  const path = adminSocketPath(dataDir)
  const maxReplyBytes = options.maxReplyBytes ?? 1_048_576
  options.signal?.throwIfAborted()
  return await new Promise((resolve, reject) => {
    const socket = createConnection({ path })
    let settled = false
    let buffered = Buffer.alloc(0)
    const finish = (err: Error | undefined, value?: unknown): void => {
      if (settled) {
        return
      }
      settled = true
      options.signal?.removeEventListener('abort', onAbort)
      socket.destroy()
      if (err != null) {
        reject(err)
      } else {
        resolve(value as AdminResults[R['op']])
      }
    }
    const onAbort = (): void => { finish(options.signal?.reason ?? new AdminError('aborted')) }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => {
      socket.write(JSON.stringify({ ...request, token }) + '\n')
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTDIR') {
        finish(new AdminUnavailableError(`no molt node is running on ${dataDir} (nothing answers on ${ADMIN_SOCKET})`))
      } else if (err.code === 'EACCES' || err.code === 'EPERM') {
        finish(new AdminUnauthorizedError(`cannot connect to ${path}: permission denied (only the node's owner may drive it)`))
      } else {
        finish(new AdminUnavailableError(`admin socket ${path}: ${err.message}`))
      }
    })
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      let end: number
      while ((end = buffered.indexOf(0x0a)) !== -1) {
        const line = buffered.subarray(0, end).toString('utf8')
        buffered = buffered.subarray(end + 1)
        let reply: Reply
        try {
          reply = JSON.parse(line) as Reply
        } catch {
          finish(new AdminBadRequestError('the node sent a reply that is not JSON'))
          return
        }
        if (reply.type === 'progress') {
          try {
            options.onProgress?.(reply.progress)
          } catch (err) {
            finish(err as Error)
            return
          }
        } else if (reply.type === 'result') {
          finish(undefined, reply.result)
          return
        } else if (reply.type === 'error') {
          const { name, message } = reply.error ?? { name: 'Error', message: 'unknown error' }
          const Known = KNOWN_ERRORS[name]
          finish(Known != null ? new Known(message) : new AdminRemoteError(message, name))
          return
        }
      }
      if (buffered.byteLength > maxReplyBytes) {
        finish(new AdminRequestTooLargeError(`a reply exceeds ${maxReplyBytes} bytes`))
      }
    })
    socket.on('close', () => {
      finish(new AdminUnavailableError(`the node on ${dataDir} closed the admin connection without a reply`))
    })
  })
}

