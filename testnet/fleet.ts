/**
 * The launcher's side of its members: starting each (a forked node process, or an in-process
 * member on the memory transport), talking to it over its channel, killing and restarting it.
 *
 * Node processes run the testnet's compiled JavaScript (see {@link buildMemberEntry}), not the
 * TypeScript sources under tsx: tsx's loader costs every process (and every app worker, which
 * the host starts the same way) tens of MB and seconds of start-up. `MOLT_TESTNET_TSX=1` runs
 * them from the sources instead.
 *
 * @packageDocumentation
 */
import { fork, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { logger } from '@libp2p/logger'
import { openStore, type MoltStore } from '../src/index.ts'
import { MemberFailedError, MemberRequestError } from './errors.ts'
import { memoryChannel, type FromMember, type LauncherChannel, type MemberConfig, type MemberEvent, type MemberRequest, type MemberStatus, type OpSample, type Op, type RequestMap, type Role } from './ipc.ts'
import { startMember, type Member } from './member.ts'

const log = logger('molt:testnet:fleet')

const REPO = fileURLToPath(new URL('..', import.meta.url))

/** What the launcher hears from its members. */
export interface FleetListener {
  status(member: MemberHandle, status: MemberStatus): void
  event(member: MemberHandle, event: MemberEvent): void
  ops(member: MemberHandle, ops: OpSample[]): void
  /** a member's process exited, or its in-process node stopped */
  exited(member: MemberHandle, how: { code: number | null, signal: string | null, expected: boolean }): void
}

/** Request arguments without the op. */
type Args<K extends Op> = Omit<Extract<MemberRequest, { op: K }>, 'op'>

/**
 * How long a member may take from its (re)start to its `ready`: far more than a healthy start
 * takes (its app worker alone may take the host's 60 s start timeout), so that only a start that
 * will never finish trips it, rather than leaving the launcher waiting forever.
 */
export const MEMBER_START_TIMEOUT_MS = 180_000

/** One member as the launcher sees it. */
export abstract class MemberHandle {
  peerId: string | undefined
  addresses: string[] = []
  admin: string | undefined
  status: MemberStatus | undefined
  alive = false
  /** set while the launcher itself stops or kills it */
  expectingExit = false
  /** set from a (re)start until it is ready or failed */
  starting = false
  private nextId = 1
  private readonly pending = new Map<number, { resolve(v: unknown): void, reject(e: Error): void, timer: ReturnType<typeof setTimeout> }>()
  /** the launcher's end of the member's channel (its messages arrive through `receive`) */
  protected channel: Pick<LauncherChannel, 'send'> | undefined
  /** the current start: resolved by `ready`, rejected by `fatal`, an exit, the deadline or the signal */
  protected ready: PromiseWithResolvers<void> | undefined

  readonly config: MemberConfig
  protected readonly listener: FleetListener

  constructor (config: MemberConfig, listener: FleetListener) {
    this.config = config
    this.listener = listener
  }

  get name (): string { return this.config.name }
  get role (): Role { return this.config.role }

  /** the process id, when it is a process */
  abstract get pid (): number | undefined

  /**
   * Starts (or restarts) it; resolves once it is ready. Rejects with {@link MemberFailedError}
   * when it fails to start or is not ready within {@link MEMBER_START_TIMEOUT_MS}, and with the
   * signal's reason when `signal` aborts first; either way the start is given up on (see
   * {@link MemberHandle.abandon}).
   */
  async start (signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    this.starting = true
    this.expectingExit = false
    const ready = this.ready = Promise.withResolvers<void>()
    const giveUp = (reason: unknown): void => {
      ready.reject(reason)
      this.abandon()
    }
    const timer = setTimeout(() => {
      giveUp(new MemberFailedError(`${this.name} was not ready within ${MEMBER_START_TIMEOUT_MS / 1000} s of its start`))
    }, MEMBER_START_TIMEOUT_MS)
    const onAbort = (): void => { giveUp(signal?.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      // both: `ready` may come before the launch has finished its own bookkeeping
      await Promise.all([ready.promise, this.launch()])
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      this.starting = false
    }
  }

  /** Launches it; its `ready` (or `fatal`, or exit) settles {@link MemberHandle.ready}. */
  protected abstract launch (): Promise<void>

  /** Gives up on a start that did not finish in time (or was interrupted). */
  protected abstract abandon (): void

  /** SIGKILL (processes only) */
  abstract kill (): void

  /** asks it to stop cleanly; resolves once it is gone */
  abstract stop (timeoutMs?: number): Promise<void>

  /** Sends a request; rejects with {@link MemberRequestError} on an error answer, exit or timeout. */
  async request<K extends Op> (op: K, args: Args<K>, timeoutMs = 30_000): Promise<RequestMap[K]['response']> {
    const channel = this.channel
    if (channel == null || !this.alive) {
      throw new MemberRequestError(`${this.name}: not running (request ${op})`)
    }
    const id = this.nextId++
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new MemberRequestError(`${this.name}: no answer to ${op} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      channel.send({ type: 'request', id, request: { op, ...args } as MemberRequest })
    })
  }

  /** Handles a message from the member. */
  protected receive (message: FromMember): void {
    switch (message.type) {
      case 'ready':
        this.peerId = message.peerId
        this.addresses = message.addresses
        this.admin = message.admin
        this.status = message.status
        this.alive = true
        this.ready?.resolve()
        this.listener.status(this, message.status)
        return
      case 'fatal':
        this.ready?.reject(new MemberFailedError(`${this.name} failed to start: ${message.error.name}: ${message.error.message}`))
        return
      case 'status':
        this.status = message.status
        this.listener.status(this, message.status)
        return
      case 'event':
        this.listener.event(this, message.event)
        return
      case 'ops':
        this.listener.ops(this, message.ops)
        return
      case 'response': {
        const p = this.pending.get(message.id)
        if (p == null) return
        this.pending.delete(message.id)
        clearTimeout(p.timer)
        if (message.ok) p.resolve(message.value)
        else p.reject(new MemberRequestError(`${this.name}: ${message.error.name}: ${message.error.message}`, { remoteName: message.error.name }))
      }
    }
  }

  /** Fails every request in flight (the member is gone). */
  protected failPending (why: string): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer)
      p.reject(new MemberRequestError(`${this.name}: ${why}`))
      this.pending.delete(id)
    }
  }
}

/**
 * V8 flags of member processes. A 1 MB semi-space (the young generation, per isolate: the node's
 * main thread and its app worker) instead of 16 MB saves about 25 MB of RSS per process for a
 * few more scavenges; a 128 MB old space (the main thread's; the app worker has the host's own
 * limit) makes V8 collect instead of growing its heap through the bursts of a rollout (bundle
 * discovery, status records): measured on 16 nodes, the median peak RSS went from 209 to 136 MB.
 * `MOLT_TESTNET_EXEC_ARGV` replaces them.
 */
export const MEMBER_EXEC_ARGV = ['--max-semi-space-size=1', '--max-old-space-size=128']

/** Where the compiled member entry is, and how to run it. */
export interface MemberEntry {
  path: string
  execArgv: string[]
}

/** Every `.ts` file under a directory, sorted. */
async function sources (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) out.push(join(entry.parentPath, entry.name))
  }
  return out.sort()
}

/**
 * Compiles `src/` and `testnet/` to JavaScript (TypeScript's own compiler; type errors do not
 * stop it) so that member processes run without tsx. The output goes to
 * `node_modules/.cache/molt-testnet/build-<hash of the sources>`: compiled once per version of
 * the sources, into a temporary directory renamed into place, so runs at once never see each
 * other's half-written files.
 */
export async function buildMemberEntry (): Promise<MemberEntry> {
  const source = join(REPO, 'testnet', 'node-process.ts')
  const execArgv = (process.env.MOLT_TESTNET_EXEC_ARGV ?? MEMBER_EXEC_ARGV.join(' ')).split(' ').filter(a => a !== '')
  if (process.env.MOLT_TESTNET_TSX === '1') {
    return { path: source, execArgv: [...execArgv, '--import', 'tsx'] }
  }
  const hash = createHash('sha256')
  for (const file of [join(REPO, 'tsconfig.json'), ...await sources(join(REPO, 'src')), ...await sources(join(REPO, 'testnet'))]) {
    hash.update(file).update('\0').update(await readFile(file)).update('\0')
  }
  const digest = hash.digest('hex').slice(0, 16)
  const cache = join(REPO, 'node_modules', '.cache', 'molt-testnet')
  const outDir = join(cache, `build-${digest}`)
  const path = join(outDir, 'testnet', 'node-process.js')
  if (existsSync(path)) return { path, execArgv }

  await mkdir(cache, { recursive: true })
  const tmp = `${outDir}.tmp-${process.pid}`
  const tsconfig = join(cache, `tsconfig-${process.pid}.json`)
  await writeFile(tsconfig, JSON.stringify({
    extends: join(REPO, 'tsconfig.json'),
    compilerOptions: { noEmit: false, noEmitOnError: false, outDir: tmp, rootDir: REPO, declaration: false, sourceMap: false, incremental: false },
    include: [join(REPO, 'src'), join(REPO, 'testnet')]
  }, null, 2))
  const tsc = join(dirname(createRequire(import.meta.url).resolve('typescript/package.json')), 'bin', 'tsc')
  const output = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, [tsc, '-p', tsconfig], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    child.stdout.on('data', (c: Buffer) => { text += c.toString() })
    child.stderr.on('data', (c: Buffer) => { text += c.toString() })
    child.on('error', reject)
    child.on('exit', () => { resolve(text) })
  })
  await rm(tsconfig, { force: true })
  if (!existsSync(join(tmp, 'testnet', 'node-process.js')) || !existsSync(join(tmp, 'src', 'host', 'worker.js'))) {
    await rm(tmp, { recursive: true, force: true })
    throw new MemberFailedError(`compiling the member entry failed:\n${output.slice(0, 2000)}`)
  }
  if (output.trim() !== '') log('tsc reported (ignored): %s', output.slice(0, 500))
  try {
    await rename(tmp, outDir)
  } catch {
    // another run put the same build in place first
    await rm(tmp, { recursive: true, force: true })
  }
  // keep the few newest builds
  const builds = (await readdir(cache)).filter(d => /^build-[0-9a-f]{16}$/.test(d) && join(cache, d) !== outDir)
  const dated = await Promise.all(builds.map(async d => ({ d, t: (await stat(join(cache, d))).mtimeMs })))
  for (const { d } of dated.sort((a, b) => b.t - a.t).slice(3)) await rm(join(cache, d), { recursive: true, force: true })
  return { path, execArgv }
}

/** A member in its own process. */
export class ProcessMember extends MemberHandle {
  private child: ChildProcess | undefined
  /** resolves when the current process exits */
  private exited: Promise<void> = Promise.resolve()

  private readonly entry: MemberEntry
  private readonly logFile: string

  constructor (config: MemberConfig, listener: FleetListener, entry: MemberEntry, logFile: string) {
    super(config, listener)
    this.entry = entry
    this.logFile = logFile
  }

  get pid (): number | undefined { return this.child?.pid }

  protected async launch (): Promise<void> {
    const logFd = await open(this.logFile, 'a')
    // the arguments only label the process (ps, /proc/*/cmdline): its config comes over IPC
    const child = fork(this.entry.path, ['--testnet', dirname(this.logFile), '--member', this.name], {
      execPath: process.execPath,
      execArgv: this.entry.execArgv,
      serialization: 'advanced',
      stdio: ['ignore', logFd.fd, logFd.fd, 'ipc']
    })
    await logFd.close()
    this.child = child
    this.channel = { send: (m) => { if (child.connected) child.send(m) } }
    // this start's, not a later restart's: this process may exit after it was replaced
    const ready = this.ready
    const { promise: exited, resolve: onExit } = Promise.withResolvers<void>()
    this.exited = exited
    child.on('message', (raw) => { this.receive(raw as FromMember) })
    child.on('exit', (code, signal) => {
      this.alive = false
      this.failPending(`exited (${signal ?? code})`)
      ready?.reject(new MemberFailedError(`${this.name} exited (${signal ?? code}) before it was ready; see ${this.logFile}`))
      this.listener.exited(this, { code, signal, expected: this.expectingExit })
      onExit()
    })
    child.send({ type: 'start', config: this.config })
  }

  protected abandon (): void {
    this.kill()
  }

  kill (): void {
    this.expectingExit = true
    this.alive = false
    this.child?.kill('SIGKILL')
  }

  async stop (timeoutMs = 10_000): Promise<void> {
    const child = this.child
    if (child == null || child.exitCode != null || child.signalCode != null) return
    this.expectingExit = true
    if (this.alive) {
      await this.request('stop', {}, timeoutMs).catch(() => {})
    } else {
      // still starting: it stops its node (bounded) and exits
      child.kill('SIGTERM')
    }
    const timer = setTimeout(() => { child.kill('SIGKILL') }, 3000)
    await this.exited
    clearTimeout(timer)
  }
}

/** The compiled `member.js` modules loaded, by path: loaded once, not once per member start. */
const compiledMembers = new Map<string, Promise<typeof startMember>>()

/** `startMember` from the compiled entry when there is one (see {@link LocalMember}), else from the sources. */
async function startMemberOf (entry: MemberEntry | undefined): Promise<typeof startMember> {
  if (entry == null || !entry.path.endsWith('.js')) return startMember
  const path = join(dirname(entry.path), 'member.js')
  let loaded = compiledMembers.get(path)
  if (loaded == null) {
    loaded = import(pathToFileURL(path).href).then((m: typeof import('./member.ts')) => m.startMember)
    compiledMembers.set(path, loaded)
  }
  return await loaded
}

/** A member in the launcher's own process, on the memory transport, in a sub-level of one store. */
export class LocalMember extends MemberHandle {
  private member: Member | undefined
  /** set when a start was given up on: the member it still makes is stopped once made */
  private abandoned = false

  private readonly shared: MoltStore
  private readonly entry?: MemberEntry

  /**
   * `entry`: the compiled member entry ({@link buildMemberEntry}); its `member.js` is loaded
   * instead of the sources, so that the members' app workers run compiled JavaScript too (under
   * tsx, each of a hundred workers would load tsx's loader).
   */
  constructor (config: MemberConfig, listener: FleetListener, shared: MoltStore, entry?: MemberEntry) {
    super(config, listener)
    this.shared = shared
    this.entry = entry
  }

  get pid (): number | undefined { return undefined }

  protected async launch (): Promise<void> {
    this.abandoned = false
    const { launcher, member } = memoryChannel()
    this.channel = launcher
    launcher.onMessage((m) => { this.receive(m) })
    const store = await openStore({ datastore: this.shared.namespace(`members/${this.name}`) })
    let started: Member
    try {
      started = await (await startMemberOf(this.entry))(this.config, member, { store, measureMemory: false, encryption: 'plaintext' })
    } catch (err) {
      throw new MemberFailedError(`${this.name} failed to start: ${(err as Error).name}: ${(err as Error).message}`, { cause: err })
    }
    if (this.abandoned) {
      await started.stop()
      return
    }
    this.member = started
  }

  protected abandon (): void {
    // an in-process start cannot be cut short: what it makes is stopped when it is made
    this.abandoned = true
    this.alive = false
  }

  kill (): void {
    throw new MemberFailedError('an in-process member cannot be killed')
  }

  async stop (): Promise<void> {
    if (this.member == null) return
    this.expectingExit = true
    this.alive = false
    this.failPending('stopped')
    const m = this.member
    this.member = undefined
    await m.stop()
    this.listener.exited(this, { code: 0, signal: null, expected: true })
  }
}
