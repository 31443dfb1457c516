import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { describe, it, expect, afterEach } from 'vitest'
import { decodeRoot, InvalidBundleError, validatePath } from '../../src/bundle/index.ts'
import { cidOf, encodeFile, encodeRoot } from '../../src/bundle/format.ts'
import { bundleNode, randomFiles, type TestNode } from './setup.ts'

describe('bundle format', () => {
  const nodes: TestNode[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
    await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
  })

  it('refuses absolute paths, "..", "." and empty segments', () => {
    for (const bad of ['/etc/passwd', '../up.js', 'a/../../b.js', 'a//b.js', './a.js', 'a\\b.js', 'C:/x.js', '', 'a/']) {
      expect(() => validatePath(bad), bad).toThrow(InvalidBundleError)
    }
    expect(validatePath('lib/a.js')).toBe('lib/a.js')
  })

  it('refuses a root from a peer whose paths climb out of the bundle', async () => {
    const { node } = await encodeFile(new Uint8Array([1, 2, 3]))
    const bytes = dagCbor.encode({ molt: 'bundle/1', files: { '../evil.js': { cid: node.cid, size: 3 } }, fileBytes: 3 })
    expect(() => decodeRoot(CIDof(bytes), bytes)).toThrow(InvalidBundleError)
    await expect(encodeRoot({ '/abs.js': { cid: node.cid, size: 3 } })).rejects.toThrow(InvalidBundleError)
    function CIDof (b: Uint8Array): any { return { code: dagCbor.code, toString: () => 'test' } as any }
    // a well-formed root decodes
    const good = await encodeRoot({ 'a.js': { cid: node.cid, size: 3 } })
    expect(decodeRoot(good.cid, good.bytes).files['a.js']?.size).toBe(3)
    expect((await cidOf(good.bytes, dagCbor.code)).equals(good.cid)).toBe(true)
  })

  it('gives an unchanged file the same CID in every version, so its blocks dedupe', async () => {
    const node = await bundleNode()
    nodes.push(node)
    const v1 = randomFiles(3, 600_000)
    const a = await node.bundles.packFiles(v1)
    const v2 = new Map(v1)
    v2.set('index.js', new Uint8Array([1, 2, 3]))
    const b = await node.bundles.packFiles(v2)
    expect(a.cid.equals(b.cid)).toBe(false)
    const rootA = await node.bundles.root(a.cid)
    const rootB = await node.bundles.root(b.cid)
    expect(rootA.files['lib/module-1.js']?.cid.equals(rootB.files['lib/module-1.js']!.cid)).toBe(true)
    expect(rootA.files['index.js']?.cid.equals(rootB.files['index.js']!.cid)).toBe(false)
    // packing the same files again yields the same bundle
    expect((await node.bundles.packFiles(v1)).cid.equals(a.cid)).toBe(true)
  })

  it('packs a directory, refuses symlinks, and extracts what it packed', async () => {
    const node = await bundleNode()
    nodes.push(node)
    const dir = await mkdtemp(join(tmpdir(), 'molt-bundle-'))
    dirs.push(dir)
    await mkdir(join(dir, 'src', 'lib'), { recursive: true })
    await writeFile(join(dir, 'src', 'index.js'), 'export default 1\n')
    await writeFile(join(dir, 'src', 'lib', 'util.js'), 'export const x = 2\n')
    const packed = await node.bundles.pack(join(dir, 'src'), { moltApi: '^1.0.0' })
    expect(await node.bundles.has(packed.cid)).toBe(true)
    expect((await node.bundles.root(packed.cid)).moltApi).toBe('^1.0.0')
    const files = await node.bundles.files(packed.cid)
    expect([...files.keys()].sort()).toEqual(['index.js', 'lib/util.js'])
    await node.bundles.extract(packed.cid, join(dir, 'out'))
    const again = await node.bundles.pack(join(dir, 'out'), { moltApi: '^1.0.0' })
    expect(again.cid.equals(packed.cid)).toBe(true)

    await symlink(join(dir, 'src', 'index.js'), join(dir, 'src', 'link.js'))
    await expect(node.bundles.pack(join(dir, 'src'))).rejects.toThrow(InvalidBundleError)
  })
})
