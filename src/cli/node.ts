/**
 * `molt node` and `molt status`.
 */
import { chmod, mkdir } from 'node:fs/promises'
import { resolve } from 'node:path'
import { createMoltNode, type MoltNode, type NodeStatus } from '../node/index.ts'
import { adminRequest, assertAdminSocketFree, startAdminServer, type AdminServer } from '../node/admin.ts'
import { CliError, flag, list, readGenesis, required, str, UsageError, type CliIO, type Command, type ParsedArgs } from './util.ts'
import type { OverlayProfile } from '../overlay/index.ts'

export function profileOf (args: ParsedArgs): OverlayProfile {
  const profile = str(args, 'profile') ?? 'network'
  if (profile !== 'network' && profile !== 'local') {
    throw new UsageError(`--profile: expected local or network, got ${JSON.stringify(profile)}`)
  }
  return profile
}

/** Resolves when the signal aborts (never without one). */
/** Resolves after `ms`, or at once when the signal aborts. */
async function sleepUnlessAborted (ms: number, signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>(resolve => {
    const timer = setTimeout(done, ms)
    function done (): void { clearTimeout(timer); signal?.removeEventListener('abort', done); resolve() }
    signal?.addEventListener('abort', done, { once: true })
  })
}

export async function untilAborted (signal: AbortSignal | undefined): Promise<void> {
  await new Promise<void>(resolve => {
    if (signal == null) {
      return
    }
    if (signal.aborted) {
      resolve()
      return
    }
    signal.addEventListener('abort', () => { resolve() }, { once: true })
  })
}

/** Prints the node's lifecycle events as they happen. */
function follow (node: MoltNode, io: CliIO): void {
  node.addEventListener('manifest:accepted', (e) => {
    const { manifest, source, from } = e.detail
    io.out(`accepted version ${manifest.body.version} (${manifest.cid.toString()}) by ${source}${from != null ? ` from ${from.toString()}` : ''}`)
  })
  node.addEventListener('manifest:cosigned', (e) => {
    io.out(`version ${e.detail.manifest.body.version} now has ${e.detail.manifest.signatures.length} signature(s)`)
  })
  node.addEventListener('rollout:halted', (e) => {
    const { proof } = e.detail
    io.out(`HALTED: two validly signed bodies at version ${proof.version}: ${proof.a.cid.toString()} and ${proof.b.cid.toString()}; the rollout stops until the root keys resolve it`)
  })
  node.addEventListener('upgrade:completed', (e) => {
    io.out(`upgraded from version ${e.detail.from} to ${e.detail.to}`)
  })
  node.addEventListener('upgrade:rolled-back', (e) => {
    io.out(`upgrade to version ${e.detail.version} rolled back: ${e.detail.error.name}: ${e.detail.error.message}`)
  })
  node.addEventListener('bundle:fetched', (e) => {
    io.out(`fetched bundle ${e.detail.cid.toString()} (${e.detail.size} bytes)`)
  })
}

export const node: Command = {
  summary: 'run a node until interrupted',
  help: `Usage: molt node --genesis GENESIS --data DIR [--listen MULTIADDR]...
                 [--bootstrap MULTIADDR]... [--profile local|network] [--pack DIR]...

Runs a molt node of the system that GENESIS describes, keeping its identity,
manifest chain and bundles in DIR, until SIGINT or SIGTERM (then it stops
cleanly). It prints its peer id and addresses, and opens its admin socket,
DIR/admin.sock, through which molt status and molt publish --data drive it.
DIR is made readable by its owner only; a node already running on DIR is
refused.

Options:
  --genesis GENESIS     the genesis configuration (molt init) (required)
  --data DIR            the data directory (required)
  --listen MULTIADDR    an address to listen on (repeatable; default
                        /ip4/0.0.0.0/tcp/0, or /ip4/127.0.0.1/tcp/0 with
                        --profile local)
  --bootstrap MULTIADDR a peer to dial at start, with /p2p/<peer id>
                        (repeatable)
  --profile PROFILE     network (default) or local: a testnet on one machine
                        (loopback only; relaxations a real network must not use)
  --pack DIR            pack this bundle directory into the node's store and
                        serve it (e.g. the genesis bundle); prints CID:SIZE
  --class NAME          run the app: this genesis class's bundle in an isolated
                        worker, upgraded as manifests arrive (without it the
                        node relays manifests and bundles only)
  -h, --help            show this help`,
  options: {
    genesis: { type: 'string' },
    data: { type: 'string' },
    listen: { type: 'string', multiple: true },
    bootstrap: { type: 'string', multiple: true },
    profile: { type: 'string' },
    pack: { type: 'string', multiple: true },
    class: { type: 'string' }
  },
  async run (args, io) {
    const genesisPath = required(args, 'genesis', 'the genesis configuration')
    const dataDir = resolve(required(args, 'data', 'the data directory'))
    const profile = profileOf(args)
    const listen = list(args, 'listen')
    const genesis = await readGenesis(genesisPath)
    try {
      await mkdir(dataDir, { recursive: true, mode: 0o700 })
      await chmod(dataDir, 0o700)
    } catch (err) {
      throw new CliError(`${dataDir}: cannot make it the data directory (${(err as Error).message})`)
    }
    await assertAdminSocketFree(dataDir)
    const klass = str(args, 'class')
    if (klass != null && !genesis.classes.some(c => c.name === klass)) {
      throw new UsageError(`--class: "${klass}" is not a class of the genesis (${genesis.classes.map(c => c.name).join(', ')})`)
    }
    const packDirs = list(args, 'pack').map(dir => resolve(dir))
    const moltNode = await createMoltNode({
      genesis,
      dataDir,
      profile,
      ...(listen.length > 0 ? { listen } : {}),
      bootstrap: list(args, 'bootstrap'),
      // packed before the app starts: its genesis bundle may be one of them
      pack: packDirs,
      ...(klass != null ? { app: { class: klass } } : {})
    })
    let admin: AdminServer | undefined
    try {
      admin = await startAdminServer(moltNode, { dataDir })
      follow(moltNode, io)
      const status = moltNode.status()
      io.out(`peer ${status.peerId}`)
      io.out(`system ${status.system} at version ${status.version} (${status.head})`)
      for (const address of status.addresses) {
        io.out(`listening ${address}`)
      }
      for (const [i, dir] of list(args, 'pack').entries()) {
        // already stored at start; packing is deterministic, so this only tells the CID
        const packed = await moltNode.bundles.pack(packDirs[i] as string)
        io.out(`packed ${dir}: ${packed.cid.toString()}:${packed.size}`)
      }
      if (status.app != null) {
        io.out(`app ${status.app.class} at version ${status.app.version}`)
      }
      if (status.halted != null) {
        io.out(`HALTED at version ${status.halted.version}: ${status.halted.a} and ${status.halted.b}`)
      }
      io.out(`admin ${admin.socketPath}`)
      await untilAborted(io.signal)
      io.err('molt: node: stopping')
    } finally {
      await admin?.close()
      await moltNode.stop()
    }
    return 0
  }
}

export function printStatus (status: NodeStatus, io: CliIO): void {
  io.out(`peer       ${status.peerId}`)
  io.out(`system     ${status.system}`)
  io.out(`version    ${status.version}`)
  io.out(`head       ${status.head}`)
  io.out(`peers      ${status.peers}`)
  for (const address of status.addresses) {
    io.out(`address    ${address}`)
  }
  const c = status.control
  if (c.seq > 0) {
    io.out(`control    ${c.seq} applied; paused [${c.paused.join(', ')}], aborted [${c.aborted.join(', ')}], minimum version ${c.minimumVersion}`)
  }
  if (status.app != null) {
    const upgrading = status.app.upgrading != null ? `, upgrading to ${status.app.upgrading.version} (${status.app.upgrading.phase})` : ''
    const bad = status.app.bad.length > 0 ? `, failed here: ${status.app.bad.join(', ')}` : ''
    const minimum = status.app.minimumVersion > 0 ? `, minimum supported ${status.app.minimumVersion}` : ''
    io.out(`app        ${status.app.class} at version ${status.app.version}${upgrading}${bad}${minimum}`)
    const r = status.app.rollout
    if (r != null) {
      io.out(`schedule   ${r.schedule} for version ${r.version}: ${r.state} (${r.reason})`)
    }
  }
  io.out(`rollout    ${rolloutVerdict(status)}`)
  if (status.fleet != null) {
    printFleet(status, io)
  }
}

/** Halted or not, and why: the equivocation halt first, then control, then counted failures. */
function rolloutVerdict (status: NodeStatus): string {
  if (status.halted != null) {
    return `HALTED: equivocation at version ${status.halted.version}: ${status.halted.a} and ${status.halted.b} are both validly signed; the rollout is halted until the root keys resolve it`
  }
  const v = status.version
  if (status.control.aborted.includes(v)) return `ABORTED: the rollout of version ${v} was aborted by a control message (upgraded nodes keep running it)`
  if (status.control.paused.includes(v)) return `PAUSED: the rollout of version ${v} is paused by a control message (molt resume lifts it)`
  const records = status.fleet != null ? [status.fleet.self, ...status.fleet.peers] : []
  const failed = records.filter(p => p.target === v && p.phase === 'failed')
  if (failed.length > 0) return `HALTED: ${failed.length} node(s) failed the upgrade to ${v} (${failed.slice(0, 3).map(p => shortPeer(p.peer)).join(', ')}); nodes whose schedule counts them hold until molt resume or molt abort`
  const halted = records.filter(p => p.target === v && p.phase === 'halted')
  if (halted.length > 0 || status.app?.rollout?.state === 'halted') return `HALTED: ${status.app?.rollout?.state === 'halted' ? status.app.rollout.reason : `${halted.length} node(s) hold for a failed counted peer`}`
  return 'running'
}

function shortPeer (peer: string): string {
  return peer.length > 14 ? `…${peer.slice(-12)}` : peer
}

/** How many peers `molt status` lists, newest version first. */
const MAX_LISTED = 64

function printFleet (status: NodeStatus, io: CliIO): void {
  const fleet = status.fleet
  if (fleet == null) return
  const records = [fleet.self, ...fleet.peers]
  const target = Math.max(status.version, ...records.map(r => r.target))
  const done = records.filter(r => r.version >= target).length
  const width = 30
  const filled = Math.round(width * done / records.length)
  io.out(`fleet      ${records.length} node(s) known here (this node and the ${fleet.peers.length} peer(s) it counts)`)
  io.out(`progress   [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${records.length} at version ${target}`)
  const count = (key: (r: typeof records[number]) => string | number): string => {
    const tally = new Map<string | number, number>()
    for (const r of records) tally.set(key(r), (tally.get(key(r)) ?? 0) + 1)
    return [...tally].sort((a, b) => String(a[0]).localeCompare(String(b[0]), 'en', { numeric: true })).map(([k, n]) => `${k}: ${n}`).join(', ')
  }
  io.out(`versions   ${count(r => `v${r.version}`)}`)
  io.out(`phases     ${count(r => r.phase)}`)
  const rows = [...fleet.peers].sort((a, b) => b.version - a.version || a.peer.localeCompare(b.peer))
  io.out('')
  io.out(`  ${'peer'.padEnd(14)} ${'class'.padEnd(14)} ${'ver'.padStart(4)} ${'target'.padStart(6)} ${'phase'.padEnd(9)} ${'group'.padEnd(12)} heard`)
  const line = (r: typeof records[number], heard: string): void => {
    io.out(`  ${shortPeer(r.peer).padEnd(14)} ${r.class.slice(0, 14).padEnd(14)} ${String(r.version).padStart(4)} ${String(r.target).padStart(6)} ${(r.healthy ? r.phase : `${r.phase}!`).padEnd(9)} ${(r.tags.group ?? '-').slice(0, 12).padEnd(12)} ${heard}`)
  }
  line(fleet.self, '(this node)')
  for (const r of rows.slice(0, MAX_LISTED)) {
    line(r, `${(r.ageMs / 1000).toFixed(1)} s ago${r.source === 'label' ? ' (call label)' : ''}`)
  }
  if (rows.length > MAX_LISTED) {
    io.out(`  … and ${rows.length - MAX_LISTED} more (molt status --json lists them all)`)
  }
}

export const status: Command = {
  summary: 'show a running node\'s state',
  help: `Usage: molt status --data DIR [--json]

Asks the node running on DIR (through its admin socket) for its peer id,
system, version and head, connected peers, addresses, its app and the minimum
supported version, why it waits for (or goes to) the newest version, and the
fleet as this node sees it: every peer its schedules count with its version,
phase and replica group, the versions and phases tallied, a progress bar
towards the newest version, and whether the rollout is halted and why
(equivocation, paused or aborted by a control message, a counted node failed).

A node knows the peers its schedules count (O(k)), not the whole fleet.

Options:
  --data DIR   the node's data directory (required)
  --json       print JSON instead
  --watch      redraw every second until interrupted (Ctrl-C)
  -h, --help   show this help`,
  options: { data: { type: 'string' }, json: { type: 'boolean' }, watch: { type: 'boolean' } },
  async run (args, io) {
    const dataDir = required(args, 'data', 'the node\'s data directory')
    const watch = flag(args, 'watch')
    while (true) {
      const s = await adminRequest(dataDir, { op: 'status' }, io.signal != null ? { signal: io.signal } : {})
      if (flag(args, 'json')) {
        io.out(JSON.stringify(s, null, watch ? 0 : 2))
      } else {
        if (watch && process.stdout.isTTY) io.out('\x1b[2J\x1b[H')
        printStatus(s, io)
        if (watch) io.out('')
      }
      if (!watch || io.signal?.aborted === true) return 0
      await sleepUnlessAborted(1000, io.signal)
    }
  }
}
