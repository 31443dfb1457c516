/**
 * `molt node`, `molt status`, `molt publish` and the admin socket, against real libp2p nodes on
 * loopback (local profile). Every node is stopped at the end of its test.
 */
import { spawn } from 'node:child_process'
import { stat } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { mkdir, writeFile } from 'node:fs/promises'
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest'
import { adminRequest, adminSocketPath, AdminUnauthorizedError, adminTokenPath } from '../../src/node/admin.ts'
import { eventually, TS_EXEC_ARGV } from '../helpers.ts'
import { background, molt, tempDir, type Background } from './run.ts'

async function rawRequest (dataDir: string, payload: string | Buffer): Promise<Record<string, unknown>> {
  return await new Promise((resolve, reject) => {
    const socket = createConnection({ path: adminSocketPath(dataDir) })
    let data = ''
    socket.on('connect', () => { socket.write(payload) })
    socket.on('data', (chunk) => { data += chunk.toString() })
    // the node may close before reading all of an oversized request: its reply is what counts
    socket.on('error', () => {})
    socket.on('close', () => {
      try {
        resolve(JSON.parse(data.split('\n')[0] as string) as Record<string, unknown>)
      } catch (err) {
        reject(err)
      }
    })
  })
}

async function gone (path: string): Promise<boolean> {
  return await stat(path).then(() => false, () => true)
}

describe('molt node, status and publish', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  const p = (name: string): string => join(dir.path, name)
  const running: Background[] = []
  let genesisBundle = ''

  beforeAll(async () => {
    dir = await tempDir()
    const root = (await molt('keygen', '--out', p('root.key'))).out[0] as string
    await molt('keygen', '--out', p('rel1.key'))
    await molt('keygen', '--out', p('rel2.key'))
    await mkdir(p('v0'))
    await writeFile(p('v0/index.js'), 'export const version = 0\n')
    await mkdir(p('v1'))
    await writeFile(p('v1/index.js'), 'export const version = 1\n')
    const init = await molt('init', '--system', 'clitest', '--root-key', root,
      '--release-key', p('rel1.key'), '--release-key', p('rel2.key'), '--release-threshold', '1',
      '--class-bundle', `app=${p('v0')}`, '--out', p('genesis.json'))
    expect(init.err.filter(l => !l.startsWith('molt: init: class app: bundle '))).toEqual([])
    expect(init.code).toBe(0)
    genesisBundle = (init.err[0] as string).slice('molt: init: class app: bundle '.length)
  })
  afterEach(async () => {
    await Promise.allSettled(running.splice(0).map(async b => await b.stop()))
  })
  afterAll(async () => { await dir.remove() })

  it('runs a node whose admin socket serves status to its owner only, and survives bad requests', async () => {
    const data = p('a')
    const node = await background(['node', '--genesis', p('genesis.json'), '--data', data, '--profile', 'local'], 'admin ')
    running.push(node)
    expect(node.line('admin')).toBe(adminSocketPath(data))
    expect((await stat(data)).mode & 0o777).toBe(0o700)
    expect((await stat(adminSocketPath(data))).mode & 0o777).toBe(0o600)
    expect((await stat(adminTokenPath(data))).mode & 0o777).toBe(0o600)

    const status = await molt('status', '--data', data)
    expect(status.code).toBe(0)
    expect(status.out).toContain(`peer       ${node.line('peer')}`)
    expect(status.out).toContain('version    0')
    expect(status.out).toContain('rollout    running')
    const json = JSON.parse((await molt('status', '--data', data, '--json')).out.join('\n')) as { version: number, addresses: string[] }
    expect(json.version).toBe(0)
    expect(json.addresses).toContain(node.line('listening'))

    // a second node on the same data directory is refused, and the first keeps running
    const second = await molt('node', '--genesis', p('genesis.json'), '--data', data, '--profile', 'local')
    expect(second.code).toBe(1)
    expect(second.err).toEqual([`molt: node: a node is already running on ${data} (its admin socket answers)`])

    // a wrong token, garbage, an unknown operation and an oversized request get typed errors
    await expect(adminRequest(data, { op: 'status' }, { token: 'not-the-token' })).rejects.toThrow(AdminUnauthorizedError)
    expect(await rawRequest(data, '{"op":"status"}\n')).toMatchObject({ type: 'error', error: { name: 'AdminUnauthorizedError' } })
    expect(await rawRequest(data, 'this is not json\n')).toMatchObject({ type: 'error', error: { name: 'AdminBadRequestError' } })
    expect(await rawRequest(data, Buffer.alloc(300_000, 0x61))).toMatchObject({ type: 'error', error: { name: 'AdminRequestTooLargeError' } })
    await expect(adminRequest(data, { op: 'explode' } as never)).rejects.toThrow(/unknown operation "explode"/)
    await expect(adminRequest(data, { op: 'publish', manifest: 'AAAA' })).rejects.toMatchObject({ name: 'AdminRemoteError', remoteName: 'ManifestDecodeError' })
    expect((await adminRequest(data, { op: 'status' })).version).toBe(0)

    running.splice(running.indexOf(node), 1)
    expect(await node.stop()).toBe(0)
    expect(await gone(adminSocketPath(data))).toBe(true)
    expect(await gone(adminTokenPath(data))).toBe(true)
    const after = await molt('status', '--data', data)
    expect(after.code).toBe(1)
    expect(after.err[0]).toMatch(/^molt: status: no molt node is running on/)
  })

  it('publishes through a short-lived node to a running one, then through the admin socket; equivocation halts and shows in status', async () => {
    // node a serves the genesis bundle: packing the directory again gives the CID in the genesis
    const a = await background(['node', '--genesis', p('genesis.json'), '--data', p('pa'), '--profile', 'local', '--pack', p('v0')], 'admin ')
    running.push(a)
    expect(a.line('packed')).toBe(`${p('v0')}: ${genesisBundle}`)
    const addressA = a.line('listening')
    const b = await background(['node', '--genesis', p('genesis.json'), '--data', p('pb'), '--profile', 'local', '--bootstrap', addressA], 'admin ')
    running.push(b)

    // version 1: pack + sign + inject through a short-lived publisher that dials node a
    const pub = await molt('publish', '--genesis', p('genesis.json'), '--peer', addressA, '--profile', 'local',
      '--bundle', p('v1'), '--class', 'app', '--key', p('rel1.key'), '--wait', '1', '--timeout', '60')
    expect(pub.err.filter(l => !l.startsWith('molt: publish: '))).toEqual([])
    expect(pub.code).toBe(0)
    // the publisher may have met node b too (through the DHT): at least the one asked for
    expect(pub.out[0]).toMatch(/^published version 1 \(\S+\): accepted by [12] peer\(s\)$/)
    expect(pub.err.some(l => /accepted by [12]\/1 peer\(s\)$/.test(l))).toBe(true)
    // it left only once a peer said it holds the whole bundle: the code cannot leave with it
    expect(pub.err.some(l => /^molt: publish: \S+ holds the bundle$/.test(l))).toBe(true)
    const v1 = /\((\S+)\)/.exec(pub.out[0] as string)?.[1] as string
    // the code lives on: node a fetches the bundle, from the publisher before it left or from
    // node b (found through the DHT or among connected peers)
    await eventually(() => a.out.some(l => l.startsWith('fetched bundle ')), 'node a fetches the bundle', 60_000)
      .catch((err: Error) => {
        throw new Error(`${err.message}\npublisher: ${pub.err.join(' | ')}\na: ${a.out.join(' | ')} ${a.err.join(' | ')}\nb: ${b.out.join(' | ')} ${b.err.join(' | ')}`)
      })
    await eventually(async () => (await adminRequest(p('pb'), { op: 'status' })).version === 1, 'node b hears of version 1')
    const statusA = await adminRequest(p('pa'), { op: 'status' })
    expect(statusA).toMatchObject({ version: 1, head: v1 })

    // version 2: created and co-signed offline against node a's head, published through a's admin socket
    expect((await molt('manifest', 'create', '--data', p('pa'), '--upgrade', `app=${statusA.head}:10`, '--created-at', '1', '--out', p('m2'))).code).toBe(0)
    expect((await molt('sign', '--key', p('rel1.key'), p('m2'))).code).toBe(0)
    const verify = await molt('manifest', 'verify', p('m2'), '--data', p('pa'))
    expect(verify.code).toBe(0)
    expect(verify.out[0]).toContain('chains onto the node\'s version 1')
    const viaAdmin = await molt('publish', '--data', p('pa'), '--manifest', p('m2'), '--key', p('rel2.key'), '--wait', '1', '--timeout', '60')
    expect(viaAdmin.code).toBe(0)
    expect(viaAdmin.out[0]).toMatch(/^published version 2 \(\S+\): accepted, accepted by [12] peer\(s\)$/)
    await eventually(async () => (await adminRequest(p('pb'), { op: 'status' })).version === 2, 'node b accepts version 2')

    // a second validly signed body at version 2: refused as equivocation, and every node halts
    expect((await molt('manifest', 'create', '--system', 'clitest', '--version', '2', '--previous', v1, '--created-at', '2', '--out', p('m2b'))).code).toBe(0)
    expect((await molt('sign', '--key', p('rel2.key'), p('m2b'))).code).toBe(0)
    const fork = await molt('publish', '--data', p('pb'), '--manifest', p('m2b'), '--wait', '0')
    expect(fork.code).toBe(1)
    expect(fork.err.at(-1)).toMatch(/^molt: publish: version 2 already has a different body .*equivocation/)
    for (const data of [p('pa'), p('pb')]) {
      const halted = await eventually(async () => {
        const s = await molt('status', '--data', data)
        return s.out.find(l => l.startsWith('rollout    HALTED'))
      }, `the node on ${data} shows the halt`)
      expect(halted).toMatch(/^rollout {4}HALTED: equivocation at version 2: \S+ and \S+ are both validly signed/)
    }
  })

  it('runs as a real process that stops cleanly on SIGTERM and replaces a stale socket', async () => {
    const mainPath = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))
    const data = p('proc')
    const start = (): { child: ReturnType<typeof spawn>, out: string[], exited: Promise<number | null> } => {
      const child = spawn(process.execPath, [...TS_EXEC_ARGV, mainPath, 'node', '--genesis', p('genesis.json'), '--data', data, '--profile', 'local'], { stdio: ['ignore', 'pipe', 'pipe'] })
      const out: string[] = []
      child.stdout?.on('data', (c: Buffer) => { out.push(...c.toString().split('\n')) })
      child.stderr?.on('data', (c: Buffer) => { out.push(...c.toString().split('\n')) })
      const exited = new Promise<number | null>(resolve => { child.on('exit', (code) => { resolve(code) }) })
      return { child, out, exited }
    }
    const first = start()
    try {
      await eventually(() => first.out.some(l => l.startsWith('admin ')), 'the node process opens its admin socket', 30_000)
    } finally {
      first.child.kill('SIGKILL')
    }
    await first.exited
    // killed hard: the socket file is left behind, with nobody listening
    expect(await gone(adminSocketPath(data))).toBe(false)

    const second = start()
    try {
      await eventually(() => second.out.some(l => l.startsWith('admin ')), 'a new node process replaces the stale socket', 30_000)
      expect((await molt('status', '--data', data)).code).toBe(0)
    } finally {
      second.child.kill('SIGTERM')
    }
    expect(await second.exited).toBe(0)
    expect(await gone(adminSocketPath(data))).toBe(true)
  })
  it('pause, resume, abort and retire through a running node; bad keys and replays change nothing', async () => {
    const data = p('ctl')
    const node = await background(['node', '--genesis', p('genesis.json'), '--data', data, '--profile', 'local'], 'admin ')
    running.push(node)
    const bad = await molt('pause', '--data', data, '--key', p('missing.key'), '--version', '1')
    expect(bad.code).not.toBe(0)
    expect(bad.err).toHaveLength(1)
    expect(JSON.parse((await molt('status', '--data', data, '--json')).out.join('\n')).control.seq).toBe(0)

    expect((await molt('pause', '--data', data, '--key', p('rel1.key'), '--version', '1')).code).toBe(0)
    expect((await molt('resume', '--data', data, '--key', p('rel1.key'), '--version', '1')).code).toBe(0)
    expect((await molt('abort', '--data', data, '--key', p('rel2.key'), '--version', '1')).code).toBe(0)
    const replay = await molt('resume', '--data', data, '--key', p('rel1.key'), '--version', '1', '--seq', '2')
    expect(replay.code).toBe(1)
    expect((await molt('retire', '--data', data, '--key', p('rel1.key'), '--minimum', '1')).code).toBe(0)
    expect((await molt('retire', '--data', data, '--key', p('rel1.key'))).code).toBe(2)
    const status = await molt('status', '--data', data)
    expect(status.out).toContain('control    4 applied; paused [], aborted [1], minimum version 1')
  })
})
