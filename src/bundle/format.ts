/**
 * The bundle format: a root node listing files by path, a node per file listing its chunks,
 * and the chunks themselves as raw blocks. Every block is addressed by a CIDv1 with a sha256
 * multihash, so an unchanged file has the same CID in every version and dedupes.
 *
 * ```
 * root (dag-cbor)  { molt: 'bundle/1', files: { '<path>': { cid: <file>, size } }, fileBytes, moltApi? }
 * file (dag-cbor)  { size, chunks: [{ cid: <chunk>, size }, ...] }
 * chunk (raw)      up to 256 KiB of the file's bytes
 * ```
 *
 * A bundle's size (what a manifest declares) is the sum of the byte lengths of all its distinct
 * blocks: root, file nodes and chunks. That is exactly what a fetch reads off the wire at most.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { InvalidBundleError } from './errors.ts'

/** The format tag a root node carries. */
export const BUNDLE_FORMAT = 'bundle/1'

/** Size of a chunk, in bytes. */
export const CHUNK_SIZE = 262_144

/** Largest root or file node accepted from a peer, in bytes. */
export const MAX_NODE_BYTES = 1_048_576

/** Largest number of files in a bundle. */
export const MAX_FILES = 10_000

/** Longest path in a bundle, in characters. */
export const MAX_PATH_LENGTH = 1024

/** One entry of a root node: a file's node and its byte length. */
export interface FileEntry {
  /** CID of the file node */
  cid: CID
  /** the file's length in bytes */
  size: number
}

/** A decoded root node. */
export interface BundleRoot {
  /** always {@link BUNDLE_FORMAT} */
  molt: typeof BUNDLE_FORMAT
  /** files by their path inside the bundle (`/`-separated, relative) */
  files: Record<string, FileEntry>
  /** the sum of the files' lengths */
  fileBytes: number
  /** the molt API range the bundle's code needs, if it declares one */
  moltApi?: string
}

/** One chunk of a file node. */
export interface ChunkEntry {
  /** CID of the raw chunk block */
  cid: CID
  /** the chunk's length in bytes */
  size: number
}

/** A decoded file node. */
export interface FileNode {
  /** the file's length in bytes: the sum of the chunk sizes */
  size: number
  /** the file's chunks, in order */
  chunks: ChunkEntry[]
}

/** A block: its CID and bytes. */
export interface Block {
  /** the block's CID */
  cid: CID
  /** the block's bytes */
  bytes: Uint8Array
}

/**
 * Throws `InvalidBundleError` unless `path` is a safe relative path: `/`-separated segments, none
 * empty, `.` or `..`, no backslash or NUL, not absolute, at most {@link MAX_PATH_LENGTH} characters.
 */
export function validatePath (path: unknown): string {
  if (typeof path !== 'string' || path.length === 0 || path.length > MAX_PATH_LENGTH) {
    throw new InvalidBundleError(`invalid bundle path ${JSON.stringify(path)}: must be 1-${MAX_PATH_LENGTH} characters`)
  }
  if (path.startsWith('/') || /^[a-zA-Z]:/.test(path) || path.includes('\\') || path.includes('\0')) {
    throw new InvalidBundleError(`invalid bundle path ${JSON.stringify(path)}: must be relative, "/"-separated`)
  }
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new InvalidBundleError(`invalid bundle path ${JSON.stringify(path)}: empty, "." and ".." segments are not allowed`)
    }
  }
  return path
}

function isSize (n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0
}

function isCid (c: unknown): c is CID {
  return CID.asCID(c) != null
}

/**
 * Computes the CIDv1 (sha256) of `bytes` under `codec`.
 */
export async function cidOf (bytes: Uint8Array, codec: number): Promise<CID> {
  return CID.createV1(codec, await sha256.digest(bytes))
}

/**
 * Whether `bytes` hash to `cid` (sha256 only: other hash functions are refused).
 */
export async function verifyBlock (cid: CID, bytes: Uint8Array): Promise<boolean> {
  if (cid.multihash.code !== sha256.code) {
    return false
  }
  const digest = await sha256.digest(bytes)
  const expected = cid.multihash.digest
  if (digest.digest.byteLength !== expected.byteLength) {
    return false
  }
  for (let i = 0; i < expected.byteLength; i++) {
    if (digest.digest[i] !== expected[i]) {
      return false
    }
  }
  return true
}

/**
 * Splits a file into chunks and builds its file node. Returns the file node's block first, then
 * the chunk blocks.
 */
export async function encodeFile (bytes: Uint8Array, chunkSize: number = CHUNK_SIZE): Promise<{ node: Block, chunks: Block[] }> {
  const chunks: Block[] = []
  for (let offset = 0; offset < bytes.byteLength; offset += chunkSize) {
    const chunk = bytes.subarray(offset, offset + chunkSize)
    chunks.push({ cid: await cidOf(chunk, raw.code), bytes: chunk })
  }
  const node: FileNode = { size: bytes.byteLength, chunks: chunks.map(c => ({ cid: c.cid, size: c.bytes.byteLength })) }
  const encoded = dagCbor.encode(node)
  return { node: { cid: await cidOf(encoded, dagCbor.code), bytes: encoded }, chunks }
}

/**
 * Builds a root node from files already encoded.
 */
export async function encodeRoot (files: Record<string, FileEntry>, moltApi?: string): Promise<Block> {
  let fileBytes = 0
  for (const [path, entry] of Object.entries(files)) {
    validatePath(path)
    fileBytes += entry.size
  }
  const root: BundleRoot = { molt: BUNDLE_FORMAT, files, fileBytes }
  if (moltApi != null) {
    root.moltApi = moltApi
  }
  const encoded = dagCbor.encode(root)
  return { cid: await cidOf(encoded, dagCbor.code), bytes: encoded }
}

/**
 * Decodes and validates a root node (from a peer or the local store). Throws `InvalidBundleError`.
 */
export function decodeRoot (cid: CID, bytes: Uint8Array): BundleRoot {
  if (cid.code !== dagCbor.code) {
    throw new InvalidBundleError(`bundle root ${cid.toString()} is not dag-cbor`)
  }
  let value: unknown
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new InvalidBundleError(`bundle root ${cid.toString()} does not decode: ${(err as Error).message}`)
  }
  const root = value as Partial<BundleRoot> | null
  if (root == null || typeof root !== 'object' || root.molt !== BUNDLE_FORMAT || root.files == null || typeof root.files !== 'object' || !isSize(root.fileBytes)) {
    throw new InvalidBundleError(`bundle root ${cid.toString()} is not a ${BUNDLE_FORMAT} root`)
  }
  const entries = Object.entries(root.files)
  if (entries.length > MAX_FILES) {
    throw new InvalidBundleError(`bundle root ${cid.toString()} lists more than ${MAX_FILES} files`)
  }
  let sum = 0
  for (const [path, entry] of entries) {
    validatePath(path)
    if (entry == null || !isCid(entry.cid) || entry.cid.code !== dagCbor.code || !isSize(entry.size)) {
      throw new InvalidBundleError(`bundle root ${cid.toString()}: bad entry for ${JSON.stringify(path)}`)
    }
    sum += entry.size
  }
  if (sum !== root.fileBytes) {
    throw new InvalidBundleError(`bundle root ${cid.toString()}: fileBytes ${root.fileBytes} is not the sum of the files' sizes ${sum}`)
  }
  if (root.moltApi != null && typeof root.moltApi !== 'string') {
    throw new InvalidBundleError(`bundle root ${cid.toString()}: moltApi must be a string`)
  }
  return root as BundleRoot
}

/**
 * Decodes and validates a file node against the size its root lists. Throws `InvalidBundleError`.
 */
export function decodeFileNode (cid: CID, bytes: Uint8Array, expectedSize: number): FileNode {
  let value: unknown
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new InvalidBundleError(`file node ${cid.toString()} does not decode: ${(err as Error).message}`)
  }
  const node = value as Partial<FileNode> | null
  if (node == null || typeof node !== 'object' || !isSize(node.size) || !Array.isArray(node.chunks)) {
    throw new InvalidBundleError(`file node ${cid.toString()} is malformed`)
  }
  let sum = 0
  for (const chunk of node.chunks as unknown[]) {
    const c = chunk as Partial<ChunkEntry> | null
    if (c == null || !isCid(c.cid) || c.cid.code !== raw.code || !isSize(c.size) || c.size === 0 || c.size > MAX_NODE_BYTES) {
      throw new InvalidBundleError(`file node ${cid.toString()}: bad chunk entry`)
    }
    sum += c.size
  }
  if (sum !== node.size || node.size !== expectedSize) {
    throw new InvalidBundleError(`file node ${cid.toString()}: sizes do not add up (${sum}, ${String(node.size)}, ${expectedSize})`)
  }
  return node as FileNode
}
