/**
 * `molt publish`: pack + sign + inject a manifest through a running local node (admin socket) or
 * through a short-lived node that dials peers, then wait for acceptance by N distinct peers.
 */
import { resolve } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { encodeSignedManifest, signManifest, type ManifestBody, type SignedManifest } from '../manifest/index.ts'
import { createMoltNode, type MoltNode } from '../node/index.ts'
import { adminRequest, AdminTimeoutError } from '../node/admin.ts'
import { parseAddress } from '../overlay/index.ts'
import { buildManifest, classUpgrades, signWith, UPGRADE_OPTIONS } from './manifest.ts'
import { profileOf } from './node.ts'
import {
  b64, CliError, int, list, parseCid, parseClassPair, readGenesis, readManifest, readPrivateKey, seconds, str, UsageError,
  type CliIO, type Command, type ParsedArgs
} from './util.ts'
import type { PeerId } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'

interface Head { system: string, version: number, cid: CID }

/** What to publish: a signed manifest file, or a bundle to pack and a body to build and sign. */
interface Plan {
  manifestFile?: string
  bundleDir?: string
  keys: string[]
}

function planOf (args: ParsedArgs): Plan {
  const manifestFile = str(args, 'manifest')
  const bundleDir = str(args, 'bundle')
  const keys = list(args, 'key')
  if ((manifestFile == null) === (bundleDir == null)) {
    throw new UsageError('give one of --manifest FILE or --bundle DIR')
  }
  if (bundleDir != null) {
    if (list(args, 'class').length === 0) {
      throw new UsageError('--class OLD[:NEW] is required with --bundle (the class the bundle upgrades)')
    }
    if (keys.length === 0) {
      throw new UsageError('--key is required with --bundle (a release key file; repeatable)')
    }
  } else {
    for (const o of ['class', 'schedule', 'param', 'from-version', 'created-at']) {
      if (args.values[o] !== undefined) {
        throw new UsageError(`--${o} only goes with --bundle (a --manifest is already built)`)
      }
    }
  }
  return { manifestFile, bundleDir: bundleDir != null ? resolve(bundleDir) : undefined, keys }
}

/** Builds (or reads) and signs the manifest of version head + 1. */
async function prepare (args: ParsedArgs, plan: Plan, head: Head, pack: (dir: string) => Promise<{ cid: CID, size: number }>, io: CliIO): Promise<{ manifest: SignedManifest, bundle?: { cid: CID, size: number } }> {
  if (plan.manifestFile != null) {
    const manifest = await signWith(await readManifest(plan.manifestFile), plan.keys)
    return { manifest }
  }
  // read every key before packing: a bad key file must change nothing on the node
  const keys = await Promise.all(plan.keys.map(async path => await readPrivateKey(path)))
  const bundle = await pack(plan.bundleDir as string)
  io.err(`molt: publish: packed ${plan.bundleDir as string}: ${bundle.cid.toString()} (${bundle.size} bytes)`)
  const body: ManifestBody = {
    system: head.system,
    version: head.version + 1,
    previous: head.cid,
    classUpgrades: classUpgrades(args, list(args, 'class').map(c => ({ ...parseClassPair(c, '--class'), bundle: bundle.cid, bundleSize: bundle.size }))),
    createdAt: int(args, 'created-at', Date.now())
  }
  let manifest = await buildManifest(body)
  for (const key of keys) {
    manifest = await signManifest(manifest, key)
  }
  return { manifest, bundle }
}

function progressPrinter (io: CliIO, version: number, wanted: number): (accepted: number) => void {
  let last = -1
  return (accepted) => {
    if (accepted !== last) {
      last = accepted
      io.err(`molt: publish: version ${version} accepted by ${accepted}/${wanted} peer(s)`)
    }
  }
}

function verdictError (verdict: string, manifest: SignedManifest, node: MoltNode): CliError | undefined {
  const { version } = manifest.body
  switch (verdict) {
    case 'accepted': case 'cosigned': case 'duplicate': case 'old':
      return undefined
    case 'ahead':
      return new CliError(`version ${version} is ahead of the head ${node.head().body.version}: publish version ${node.head().body.version + 1} first`)
    case 'halted':
      return new CliError(`the rollout is halted by a fork proof at version ${node.chain.halt?.version ?? '?'}`)
    case 'equivocation':
      return new CliError(`version ${version} already has a different body (${node.chain.get(version)?.cid.toString() ?? '?'}): this manifest proves equivocation and halts the rollout`)
    default:
      return new CliError(`the manifest was not taken (${verdict})`)
  }
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = (): void => { clearTimeout(timer); reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** Catches the short-lived node up with a peer's chain through head exchange and pulls. */
async function catchUp (node: MoltNode, peer: PeerId, signal: AbortSignal): Promise<void> {
  const theirs = await node.propagation.exchangeHeads(peer, signal)
  let idle = 0
  while (node.head().body.version < theirs.version) {
    if (node.chain.halt != null) {
      throw new CliError(`${peer.toString()} serves a forked chain: the rollout is halted at version ${node.chain.halt.version}`)
    }
    const before = node.head().body.version
    await node.propagation.pull(peer, signal)
    if (node.head().body.version === before) {
      if (++idle > 10) {
        throw new CliError(`cannot catch up with ${peer.toString()}: it is at version ${theirs.version}, this publisher reached ${before}`)
      }
      await sleep(250, signal)
    }
  }
}

/** Through the node running on `dataDir`. */
async function viaAdmin (args: ParsedArgs, plan: Plan, dataDir: string, wait: number, timeoutMs: number, io: CliIO): Promise<number> {
  const status = await adminRequest(dataDir, { op: 'status' }, { signal: io.signal })
  if (status.halted != null) {
    throw new CliError(`the node's rollout is halted by a fork proof at version ${status.halted.version} (${status.halted.a} vs ${status.halted.b})`)
  }
  const head: Head = { system: status.system, version: status.version, cid: parseCid(status.head, 'the node\'s head') }
  const { manifest } = await prepare(args, plan, head, async (dir) => {
    const r = await adminRequest(dataDir, { op: 'pack', dir }, { signal: io.signal })
    return { cid: parseCid(r.cid, 'packed bundle'), size: r.size }
  }, io)
  const { version } = manifest.body
  io.err(`molt: publish: publishing version ${version} (${manifest.cid.toString()}), ${manifest.signatures.length} signature(s), through ${status.peerId}`)
  if (wait > status.peers) {
    io.err(`molt: publish: note: the node has ${status.peers} connected peer(s) now; waiting until ${wait} report version ${version}`)
  }
  const progress = progressPrinter(io, version, wait)
  try {
    const r = await adminRequest(dataDir, { op: 'publish', manifest: b64(encodeSignedManifest(manifest)), wait, timeoutMs }, {
      signal: io.signal,
      onProgress: (p) => { progress(p.accepted) }
    })
    io.out(`published version ${r.version} (${r.cid}): ${r.verdict}${wait > 0 ? `, accepted by ${r.accepted.length} peer(s)` : ''}`)
    return 0
  } catch (err) {
    if (err instanceof AdminTimeoutError) {
      throw new CliError(`timed out: ${err.message}`)
    }
    throw err
  }
}

/** Through a short-lived node with an in-memory store that dials `peers`. */
async function viaPeers (args: ParsedArgs, plan: Plan, wait: number, timeoutMs: number, lingerMs: number, io: CliIO): Promise<number> {
  const genesis = await readGenesis(str(args, 'genesis') as string)
  const addresses = list(args, 'peer').map(a => {
    const ma = parseAddress(a, '--peer')
    const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
    if (id == null) {
      throw new UsageError(`--peer ${a}: the address must end in /p2p/<peer id>`)
    }
    return { ma, text: a, peer: peerIdFromString(id) }
  })
  if (addresses.length === 0) {
    throw new UsageError('--peer is required with --genesis (a peer to inject through; repeatable)')
  }
  if (wait < 1) {
    throw new UsageError('--wait must be at least 1 here: a short-lived publisher stays until a peer has the manifest')
  }
  const listen = list(args, 'listen')
  const deadline = AbortSignal.timeout(timeoutMs)
  const signal = io.signal != null ? AbortSignal.any([io.signal, deadline]) : deadline
  const node = await createMoltNode({ genesis, profile: profileOf(args), fetchBundles: false, ...(listen.length > 0 ? { listen } : {}) })
  let stage = 'dialling'
  let accepted = 0
  try {
    for (const { ma, text } of addresses) {
      try {
        await node.libp2p.dial(ma, { signal })
      } catch (err) {
        throw new CliError(`cannot dial ${text}: ${(err as Error).message}`)
      }
    }
    stage = 'catching up'
    for (const { peer } of addresses) {
      await catchUp(node, peer, signal)
    }
    const head = node.head()
    stage = 'packing'
    const { manifest, bundle } = await prepare(args, plan, { system: head.body.system, version: head.body.version, cid: head.cid }, async (dir) => await node.bundles.pack(dir), io)
    const { version } = manifest.body
    io.err(`molt: publish: publishing version ${version} (${manifest.cid.toString()}), ${manifest.signatures.length} signature(s), to ${addresses.length} peer(s)`)
    const { verdict } = await node.publish(manifest)
    const refused = verdictError(verdict, manifest, node)
    if (refused != null) {
      throw refused
    }
    stage = `waiting for ${wait} peer(s) to accept version ${version}`
    const progress = progressPrinter(io, version, wait)
    const peers = await node.waitForAcceptance(version, wait, {
      signal,
      onProgress: (n) => { accepted = n; progress(n) }
    })
    if (bundle != null) {
      // the bundle exists nowhere else yet: stay until a peer reports holding all of it
      stage = `serving bundle ${bundle.cid.toString()} (${bundle.size} bytes) until a peer holds it`
      io.err(`molt: publish: ${stage}`)
      const holder = await node.bundles.waitForHolder(bundle.cid, { signal })
      io.err(`molt: publish: ${holder.toString()} holds the bundle`)
    }
    if (lingerMs > 0) {
      io.err(`molt: publish: lingering ${lingerMs / 1000} s`)
      await sleep(lingerMs, signal)
    }
    io.out(`published version ${version} (${manifest.cid.toString()}): accepted by ${peers.length} peer(s)`)
    return 0
  } catch (err) {
    if (deadline.aborted) {
      throw new CliError(`timed out after ${timeoutMs / 1000} s while ${stage}${stage.startsWith('waiting') ? ` (${accepted} of ${wait} so far)` : ''}`)
    }
    if (io.signal?.aborted === true) {
      throw new CliError(`interrupted while ${stage}`)
    }
    throw err
  } finally {
    await node.stop()
  }
}

export const publish: Command = {
  summary: 'pack, sign and inject an upgrade; wait for peers to accept it',
  help: `Usage: molt publish (--data DIR
                    | --genesis GENESIS --peer MULTIADDR... [--profile P] [--listen MA]...)
                   (--manifest FILE [--key KEY]...
                    | --bundle DIR --class OLD[:NEW]... --key KEY...
                      [--schedule NAME] [--param KEY=VALUE]... [--from-version N]
                      [--created-at MS])
                   [--wait N] [--timeout SECONDS] [--linger SECONDS]

Injects an upgrade into the system through any peer and waits until N distinct
peers report it (progress on stderr).

Through which node:
  --data DIR           the node running on DIR (its admin socket); it keeps
                       serving the bundle afterwards
  --genesis GENESIS    a short-lived node of this system (in-memory store) that
  --peer MULTIADDR     dials these peers (with /p2p/<peer id>; repeatable),
                       catches up their chain, submits the manifest to them
                       directly as well as by gossip, and stays until the
                       peers accepted it and (with --bundle) a peer
                       reports holding the whole bundle
  --profile P          network (default) or local (loopback testnets)
  --listen MULTIADDR   the short-lived node's listen address

What:
  --manifest FILE      a manifest file (molt manifest create + molt sign);
                       --key adds further signatures before publishing
  --bundle DIR         pack DIR as the new class's bundle, and build version
                       head + 1 upgrading each --class to it
  --class OLD[:NEW]    a class upgrade (repeatable)
  --key KEY            a release key file to sign with (repeatable)
  --schedule NAME      scheduling function (default: eager)
  --param KEY=VALUE    a schedule parameter (repeatable)
  --from-version N     the class upgrades apply to nodes at version N
  --created-at MS      milliseconds since the epoch (default: now)

Waiting:
  --wait N             distinct connected peers that must report the new
                       version (default 1; 0 with --data: do not wait)
  --timeout SECONDS    give up after this long, exit 1 (default 120)
  --linger SECONDS     a short-lived node stays this much longer (default 0)
  -h, --help           show this help`,
  options: {
    data: { type: 'string' },
    genesis: { type: 'string' },
    peer: { type: 'string', multiple: true },
    profile: { type: 'string' },
    listen: { type: 'string', multiple: true },
    manifest: { type: 'string' },
    bundle: { type: 'string' },
    class: { type: 'string', multiple: true },
    key: { type: 'string', short: 'k', multiple: true },
    ...UPGRADE_OPTIONS,
    'created-at': { type: 'string' },
    wait: { type: 'string' },
    timeout: { type: 'string' },
    linger: { type: 'string' }
  },
  async run (args, io) {
    const dataDir = str(args, 'data')
    const genesis = str(args, 'genesis')
    if ((dataDir == null) === (genesis == null)) {
      throw new UsageError('give one of --data DIR (a running node) or --genesis GENESIS with --peer')
    }
    if (dataDir != null) {
      for (const o of ['peer', 'profile', 'listen', 'linger']) {
        if (args.values[o] !== undefined) {
          throw new UsageError(`--${o} goes with --genesis, not --data`)
        }
      }
    }
    const plan = planOf(args)
    const wait = int(args, 'wait', 1)
    const timeoutMs = seconds(args, 'timeout', 120)
    const lingerMs = seconds(args, 'linger', 0)
    return dataDir != null
      ? await viaAdmin(args, plan, dataDir, wait, timeoutMs, io)
      : await viaPeers(args, plan, wait, timeoutMs, lingerMs, io)
  }
}
