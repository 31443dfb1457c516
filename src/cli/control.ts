/**
 * `molt pause|resume|abort|retire|allow`: sign a control message with release keys and inject it
 * through the node running on a data directory.
 */
import { toString } from 'uint8arrays/to-string'
import { createControl, encodeSignedControl, signControl, type ControlAction } from '../manifest/index.ts'
import { adminRequest } from '../node/admin.ts'
import { CliError, int, list, readPrivateKey, required, UsageError, type CliIO, type Command, type ParsedArgs } from './util.ts'

const COMMON_OPTIONS = {
  data: { type: 'string' },
  key: { type: 'string', multiple: true },
  version: { type: 'string' },
  seq: { type: 'string' }
} as const

const COMMON_HELP = `  --data DIR     the data directory of a running node to inject through (required)
  --key KEY      a release key file; repeat until the release threshold is met (required)
  --version N    the manifest version the message concerns (default: the node's head)
  --seq N        the control sequence number (default: the node's highest + 1)
  -h, --help     show this help`

async function send (args: ParsedArgs, io: CliIO, action: ControlAction, what: string): Promise<number> {
  const dataDir = required(args, 'data', 'the data directory of a running node')
  const keyFiles = list(args, 'key')
  if (keyFiles.length === 0) {
    throw new UsageError('--key is required (a release key file; repeatable)')
  }
  // every key is read before anything reaches the node
  const keys = await Promise.all(keyFiles.map(async path => await readPrivateKey(path)))
  const status = await adminRequest(dataDir, { op: 'status' }, { signal: io.signal })
  const scope = int(args, 'version', status.version, 0)
  const seq = int(args, 'seq', status.control.seq + 1, 1)
  let control = await createControl({ system: status.system, seq, scope, action, createdAt: Date.now() })
  for (const key of keys) {
    control = await signControl(control, key)
  }
  const result = await adminRequest(dataDir, { op: 'control', control: toString(encodeSignedControl(control), 'base64') }, { signal: io.signal })
  if (result.verdict !== 'accepted') {
    throw new CliError(`control ${seq} was not applied (${result.verdict}): the node has applied up to ${result.state.seq}`)
  }
  io.out(`${what} (control ${seq}, version ${scope}): applied; paused [${result.state.paused.join(', ')}], aborted [${result.state.aborted.join(', ')}], minimum version ${result.state.minimumVersion}`)
  return 0
}

function simple (type: 'pause' | 'resume' | 'abort', summary: string, detail: string): Command {
  return {
    summary,
    help: `Usage: molt ${type} --data DIR --key KEY... [--version N] [--seq N]

${detail}

Options:
${COMMON_HELP}`,
    options: COMMON_OPTIONS,
    async run (args, io) {
      return await send(args, io, { type }, type === 'pause' ? 'paused' : type === 'resume' ? 'resumed' : 'aborted')
    }
  }
}

export const pause = simple('pause', 'pause a rollout (nodes not yet upgraded wait)',
  'Signs a pause for a manifest version and injects it through the node on DIR:\nnodes not yet upgraded to that version wait until a resume.')

export const resume = simple('resume', 'resume a paused rollout',
  'Signs a resume for a manifest version and injects it through the node on DIR.')

export const abort = simple('abort', 'abort a rollout (upgraded nodes keep running)',
  'Signs an abort for a manifest version and injects it through the node on DIR:\nnodes not yet upgraded to it never will; upgraded nodes keep running. Final.')

export const retire: Command = {
  summary: 'raise the minimum supported version',
  help: `Usage: molt retire --data DIR --key KEY... --minimum N [--version N] [--seq N]

Signs a raise of the minimum supported version and injects it through the node
on DIR: calls labelled below N then fail VersionRetired, and what served them
is discarded. The minimum only ever rises.

Options:
  --minimum N    the new minimum supported version (required)
${COMMON_HELP}`,
  options: { ...COMMON_OPTIONS, minimum: { type: 'string' } },
  async run (args, io) {
    const minimumVersion = int(args, 'minimum', undefined, 0)
    if (minimumVersion == null) {
      throw new UsageError('--minimum N is required')
    }
    return await send(args, io, { type: 'retire', minimumVersion }, `minimum version ${minimumVersion}`)
  }
}

export const allow: Command = {
  summary: 'set the peers allowed to upgrade to a version',
  help: `Usage: molt allow --data DIR --key KEY... [--peer ID]... [--version N] [--seq N]

Signs the allow-list of peers authorised to upgrade to a manifest version and
injects it through the node on DIR. Without --peer, lifts the restriction.

Options:
  --peer ID      a peer id allowed to upgrade (repeatable)
${COMMON_HELP}`,
  options: { ...COMMON_OPTIONS, peer: { type: 'string', multiple: true } },
  async run (args, io) {
    const peers = list(args, 'peer')
    return await send(args, io, { type: 'allow', peers }, peers.length === 0 ? 'allow-list lifted' : `allowed ${peers.length} peer(s)`)
  }
}
