/**
 * The offline commands: keygen, init, manifest create/show/verify, sign (co-signing), and how
 * every bad argument or file is reported.
 */
import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { decodeSignedManifest } from '../../src/manifest/index.ts'
import { molt, tempDir } from './run.ts'

const BUNDLE = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy'

describe('molt offline commands', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>
  const p = (name: string): string => join(dir.path, name)

  beforeAll(async () => { dir = await tempDir() })
  afterAll(async () => { await dir.remove() })

  it('keygen writes an owner-only key file, prints its public key and refuses to overwrite', async () => {
    const r = await molt('keygen', '--out', p('k.key'))
    expect(r.code).toBe(0)
    expect(r.out).toHaveLength(1)
    expect(r.out[0]).toMatch(/^[A-Za-z0-9+/]+$/)
    expect((await stat(p('k.key'))).mode & 0o777).toBe(0o600)
    const file = JSON.parse(await readFile(p('k.key'), 'utf8')) as { publicKey: string }
    expect(file.publicKey).toBe(r.out[0])

    const again = await molt('keygen', '--out', p('k.key'))
    expect(again.code).toBe(1)
    expect(again.err).toEqual([`molt: keygen: ${p('k.key')}: already exists (use --force to replace it)`])
    expect((await molt('keygen', '--out', p('k.key'), '--force')).code).toBe(0)
  })

  it('init, manifest create, sign (co-signing), show and verify round-trip', async () => {
    const root = (await molt('keygen', '--out', p('root.key'))).out[0] as string
    await molt('keygen', '--out', p('rel1.key'))
    await molt('keygen', '--out', p('rel2.key'))
    await molt('keygen', '--out', p('rel3.key'))

    // keys as a public key string or as key files
    const init = await molt('init', '--system', 'demo', '--root-key', root,
      '--release-key', p('rel1.key'), '--release-key', p('rel2.key'), '--release-key', p('rel3.key'), '--release-threshold', '2',
      '--class', `app=${BUNDLE}:100`, '--created-at', '1700000000000', '--out', p('genesis.json'))
    expect(init.err).toEqual([])
    expect(init.code).toBe(0)
    const genesisCid = /: (\S+)$/.exec(init.out[0] as string)?.[1]
    const genesis = JSON.parse(await readFile(p('genesis.json'), 'utf8')) as { policy: { root: { keys: string[] }, release: { threshold: number } } }
    expect(genesis.policy.root.keys).toEqual([root])
    expect(genesis.policy.release.threshold).toBe(2)

    const create = await molt('manifest', 'create', '--genesis', p('genesis.json'), '--upgrade', `app:app2=${BUNDLE}:200`,
      '--schedule', 'gradual', '--param', 'waves=3', '--created-at', '1700000000001', '--out', p('m1'))
    expect(create.code).toBe(0)
    const cid = /: (\S+) \(unsigned\)$/.exec(create.out[0] as string)?.[1]
    expect(cid).toBeDefined()

    const unsigned = await decodeSignedManifest(new Uint8Array(await readFile(p('m1'))))
    expect(unsigned.body.previous?.toString()).toBe(genesisCid)
    expect(unsigned.body.classUpgrades[0]).toMatchObject({ oldClass: 'app', newClass: 'app2', bundleSize: 200, schedule: { name: 'gradual', params: { waves: 3 } } })

    // one signature is below the threshold of 2
    expect((await molt('sign', '--key', p('rel1.key'), p('m1'))).code).toBe(0)
    const below = await molt('manifest', 'verify', p('m1'), '--genesis', p('genesis.json'))
    expect(below.code).toBe(1)
    expect(below.err).toHaveLength(1)
    expect(below.err[0]).toContain('BelowThresholdError')

    // a second co-signer, offline, into another file: same CID
    const cosign = await molt('sign', '--key', p('rel2.key'), p('m1'), '--out', p('m1.signed'))
    expect(cosign.code).toBe(0)
    expect(cosign.out[0]).toContain(`(${cid as string}): 2 signature(s)`)
    const signed = await decodeSignedManifest(new Uint8Array(await readFile(p('m1.signed'))))
    expect(signed.cid.toString()).toBe(cid)
    expect(signed.signatures).toHaveLength(2)

    const ok = await molt('manifest', 'verify', p('m1.signed'), '--genesis', p('genesis.json'))
    expect(ok.err).toEqual([])
    expect(ok.code).toBe(0)
    expect(ok.out[0]).toContain('valid under the genesis policy: 2 authorized signer(s)')

    const show = await molt('manifest', 'show', p('m1.signed'))
    expect(show.code).toBe(0)
    expect(show.out).toContain(`manifest    ${cid as string}`)
    expect(show.out.filter(l => l.includes('signed by'))).toHaveLength(2)
    const json = await molt('manifest', 'show', p('m1.signed'), '--json')
    expect(JSON.parse(json.out.join('\n'))).toMatchObject({ cid, version: 1, previous: genesisCid, signatures: [{}, {}] })

    // a key outside the policy makes the manifest invalid
    expect((await molt('sign', '--key', p('k.key'), p('m1.signed'), '--out', p('m1.stranger'))).code).toBe(0)
    const stranger = await molt('manifest', 'verify', p('m1.stranger'), '--genesis', p('genesis.json'))
    expect(stranger.code).toBe(1)
    expect(stranger.err[0]).toContain('UnknownKeyError')
  })

  it('refuses a key file that others can read', async () => {
    await molt('keygen', '--out', p('open.key'))
    await chmod(p('open.key'), 0o644)
    await molt('manifest', 'create', '--system', 'demo', '--version', '2', '--previous', BUNDLE, '--out', p('m2'))
    const r = await molt('sign', '--key', p('open.key'), p('m2'))
    expect(r.code).toBe(1)
    expect(r.err).toEqual([`molt: sign: ${p('open.key')}: permissions 0644 are too open; a key must be readable by its owner only (chmod 600 ${p('open.key')})`])
  })

  it('reports every bad argument or file in one line with a non-zero status', async () => {
    await writeFile(p('garbage'), 'not a manifest')
    await writeFile(p('bad.json'), '{"system": 1}')
    const cases: Array<[string[], number, RegExp]> = [
      [[], 2, /^molt: missing command/],
      [['frobnicate'], 2, /^molt: unknown command "frobnicate"/],
      [['manifest'], 2, /^molt: manifest: missing command/],
      [['manifest', 'explode'], 2, /^molt: manifest: unknown command "explode"/],
      [['keygen'], 2, /^molt: keygen: --out is required/],
      [['keygen', '--out'], 2, /^molt: keygen: option --out needs a value/],
      [['keygen', '--bogus'], 2, /^molt: keygen: unknown option --bogus/],
      [['keygen', '--out', 'x', 'extra'], 2, /^molt: keygen: unexpected argument "extra"/],
      [['init', '--system', 'Bad Name', '--out', 'g'], 2, /^molt: init: --system: "Bad Name" is not a name/],
      [['init', '--system', 'demo', '--root-key', 'nonsense', '--release-key', 'x', '--out', p('g2')], 2, /^molt: init: --root-key: "nonsense" is neither a key file nor a base64 public key/],
      [['init', '--system', 'demo', '--root-key', p('root.key'), '--release-key', p('rel1.key'), '--release-key', p('rel2.key'), '--out', p('g2')], 2, /--release-threshold is required with 2 release keys/],
      [['init', '--system', 'demo', '--root-key', p('root.key'), '--release-key', p('rel1.key'), '--release-threshold', '2', '--out', p('g2')], 2, /--release-threshold 2 is more than the 1 release key/],
      [['init', '--system', 'demo', '--root-key', p('root.key'), '--release-key', p('rel1.key'), '--class', 'app=notacid:1', '--out', p('g2')], 2, /--class app: "notacid" is not a CIDv1/],
      [['sign', p('m1')], 2, /^molt: sign: --key is required/],
      [['sign', '--key', p('rel1.key')], 2, /^molt: sign: missing the manifest FILE/],
      [['sign', '--key', p('nokey'), p('m1')], 1, /^molt: sign: .*nokey: no such file$/],
      [['sign', '--key', p('rel1.key'), p('garbage')], 1, /^molt: sign: .*garbage: not a valid manifest \(ManifestDecodeError/],
      [['manifest', 'show', p('missing')], 1, /^molt: manifest show: .*missing: no such file$/],
      [['manifest', 'show', dir.path], 1, /is a directory$/],
      [['manifest', 'verify', p('m1')], 2, /give one of --genesis or --data/],
      [['manifest', 'verify', p('m1'), '--genesis', p('bad.json')], 1, /bad\.json: policy: expected an object/],
      [['manifest', 'verify', p('m1'), '--genesis', p('garbage')], 1, /garbage: not JSON/],
      [['manifest', 'create', '--system', 'demo', '--out', p('m3')], 2, /--version is required with --system/],
      [['manifest', 'create', '--genesis', p('genesis.json'), '--upgrade', 'app', '--out', p('m3')], 2, /--upgrade: expected OLD\[:NEW\]=CID:SIZE/],
      [['manifest', 'create', '--genesis', p('genesis.json'), '--version', 'x', '--out', p('m3')], 2, /--version: expected an integer/],
      [['status'], 2, /^molt: status: --data is required/],
      [['status', '--data', p('nonode')], 1, /^molt: status: no molt node is running on/],
      [['node', '--genesis', p('genesis.json'), '--data', p('d'), '--profile', 'moon'], 2, /--profile: expected local or network/],
      [['node', '--genesis', p('missing.json'), '--data', p('d')], 1, /missing\.json: no such file/],
      [['publish', '--genesis', p('genesis.json')], 2, /give one of --manifest FILE or --bundle DIR/],
      [['publish', '--data', p('d'), '--genesis', p('genesis.json')], 2, /give one of --data DIR/],
      [['publish', '--genesis', p('genesis.json'), '--bundle', dir.path, '--class', 'app'], 2, /--key is required with --bundle/],
      [['publish', '--genesis', p('genesis.json'), '--manifest', p('m1'), '--peer', '/ip4/127.0.0.1/tcp/1'], 2, /must end in \/p2p\/<peer id>/],
      [['publish', '--genesis', p('genesis.json'), '--manifest', p('m1'), '--peer', 'nonsense'], 1, /--peer: "nonsense" is not a multiaddr/],
      [['publish', '--data', p('d'), '--manifest', p('m1'), '--timeout', 'soon'], 2, /--timeout: expected a number of seconds/]
    ]
    for (const [argv, code, pattern] of cases) {
      const r = await molt(...argv)
      expect({ argv, code: r.code, lines: r.err.length }).toEqual({ argv, code, lines: 1 })
      expect(r.err[0]).toMatch(pattern)
      expect(r.err[0]).not.toContain('\n')
    }
  })

  it('prints help for every command', async () => {
    const top = await molt('--help')
    expect(top.code).toBe(0)
    for (const cmd of [['keygen'], ['init'], ['node'], ['status'], ['publish'], ['sign'], ['manifest', 'create'], ['manifest', 'show'], ['manifest', 'verify']]) {
      const r = await molt(...cmd, '--help')
      expect(r.code).toBe(0)
      expect(r.out[0]).toMatch(new RegExp(`^Usage: molt ${cmd.join(' ')}`))
      expect(top.out.join('\n')).toContain(cmd.join(' '))
    }
    expect((await molt('help', 'publish')).out[0]).toMatch(/^Usage: molt publish/)
    expect((await molt('manifest', '--help')).code).toBe(0)
  })
})
