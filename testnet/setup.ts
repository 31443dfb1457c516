/**
 * What a testnet is made of before any member starts: its data directory (wiped at start), its
 * keys (a root and a release key, as `molt keygen` files, so `molt publish --key` works on a
 * kept testnet), its genesis, the Chord bundles written out as directories, and the signed
 * manifests of the upgrades it will publish.
 *
 * @packageDocumentation
 */
import { existsSync } from 'node:fs'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { publicKeyToProtobuf } from '@libp2p/crypto/keys'
import {
  buildBundle, createManifest, encodeSignedManifest, genesisToJSON, signManifest,
  type ClassUpgrade, type GenesisConfig, type SignedManifest
} from '../src/index.ts'
import { newKeyFile, readPrivateKey, writeFileAtomic } from '../src/cli/util.ts'
import { TestnetError } from './errors.ts'
import type { BundleFiles, ChordExample } from './chord.ts'
import type { PrivateKey } from '@libp2p/interface'

/** Marks a directory the testnet made, so only such a directory is ever wiped. */
export const MARKER = '.molt-testnet'

/** The system's name. */
export const SYSTEM = 'chord-testnet'

/**
 * Empties the testnet's data directory: refuses a non-empty directory that a testnet did not
 * make (no marker file).
 */
export async function freshDataDir (dir: string): Promise<void> {
  if (existsSync(dir)) {
    const entries = await readdir(dir)
    if (entries.length > 0 && !entries.includes(MARKER)) {
      throw new TestnetError(`${dir} is not empty and was not made by the testnet (no ${MARKER} file): refusing to wipe it`)
    }
    await rm(dir, { recursive: true, force: true })
  }
  await mkdir(dir, { recursive: true, mode: 0o700 })
  await writeFile(join(dir, MARKER), 'made by npm run testnet; wiped at every start\n')
}

/** A bundle written out as a directory, with its root and size. */
export interface BundleDir {
  dir: string
  size: number
  /** for the manifest */
  root: Awaited<ReturnType<typeof buildBundle>>['root']
}

/** Writes a bundle's files under `dir` and computes the CID `pack` will give it. */
async function writeBundle (dir: string, files: BundleFiles): Promise<BundleDir> {
  for (const [path, bytes] of files) {
    const full = join(dir, ...path.split('/'))
    await mkdir(dirname(full), { recursive: true })
    await writeFile(full, bytes)
  }
  const built = await buildBundle(files)
  return { dir, size: built.size, root: built.root }
}

/**
 * Makes a key as `molt keygen` does (a key file, mode 0600) and reads it back as `molt publish
 * --key` does, so a kept testnet's key files are what the CLI takes.
 */
async function makeKey (path: string): Promise<PrivateKey> {
  await writeFileAtomic(path, JSON.stringify(await newKeyFile(), null, 2) + '\n', { mode: 0o600 })
  return await readPrivateKey(path)
}

/** Everything made before the members start. */
export interface TestnetSetup {
  dataDir: string
  genesis: GenesisConfig
  genesisPath: string
  releaseKey: PrivateKey
  releaseKeyPath: string
  rootKeyPath: string
  /** bundle directories: `node` and `client` by Chord version (1, 2, 3) */
  bundles: { node: Map<number, BundleDir>, client: Map<number, BundleDir> }
  nodeClass: string
  clientClass: string
}

/** Makes the keys, the genesis and the bundle directories in a fresh data directory. */
export async function prepare (dataDir: string, chord: ChordExample): Promise<TestnetSetup> {
  await freshDataDir(dataDir)
  const rootKeyPath = join(dataDir, 'root.key')
  const releaseKeyPath = join(dataDir, 'release.key')
  const root = await makeKey(rootKeyPath)
  const release = await makeKey(releaseKeyPath)
  const bundleRoot = join(dataDir, 'bundles')
  const node = new Map<number, BundleDir>()
  const client = new Map<number, BundleDir>()
  const { bundles } = chord
  node.set(1, await writeBundle(join(bundleRoot, 'node-v1'), bundles.node.v1))
  node.set(2, await writeBundle(join(bundleRoot, 'node-v2'), bundles.node.v2))
  if (bundles.node.v3 != null) node.set(3, await writeBundle(join(bundleRoot, 'node-v3'), bundles.node.v3))
  client.set(1, await writeBundle(join(bundleRoot, 'client-v1'), bundles.client.v1))
  client.set(2, await writeBundle(join(bundleRoot, 'client-v2'), bundles.client.v2))
  const genesis: GenesisConfig = {
    system: SYSTEM,
    policy: {
      root: { keys: [publicKeyToProtobuf(root.publicKey)], threshold: 1 },
      release: { keys: [publicKeyToProtobuf(release.publicKey)], threshold: 1 }
    },
    classes: [
      { name: chord.nodeClass, bundle: (node.get(1) as BundleDir).root, bundleSize: (node.get(1) as BundleDir).size },
      { name: chord.clientClass, bundle: (client.get(1) as BundleDir).root, bundleSize: (client.get(1) as BundleDir).size }
    ],
    createdAt: Date.now()
  }
  const genesisPath = join(dataDir, 'genesis.json')
  await writeFile(genesisPath, JSON.stringify(genesisToJSON(genesis), null, 2) + '\n')
  return { dataDir, genesis, genesisPath, releaseKey: release, releaseKeyPath, rootKeyPath, bundles: { node, client }, nodeClass: chord.nodeClass, clientClass: chord.clientClass }
}

/** The schedules of one upgrade. */
export interface UpgradePlan {
  /** the chord-node upgrade's SF and its parameters */
  schedule: string
  params: Record<string, string | number | boolean | null>
  /** every chord-node peer id: the clients' class-order roster */
  roster: string[]
}

/**
 * Builds and signs the manifest of system version `version` (Chord v`version + 1`) on top of
 * `previous`: chord-node → its next bundle by `plan.schedule`; chord-client → its next bundle
 * (when there is one) by `class-order`, after every chord node. Also writes it to
 * `<dataDir>/manifest-<version>.bin`.
 */
export async function upgradeManifest (setup: TestnetSetup, previous: SignedManifest, version: number, plan: UpgradePlan): Promise<{ manifest: SignedManifest, pack: string[] }> {
  const chord = version + 1
  const nodeBundle = setup.bundles.node.get(chord)
  if (nodeBundle == null) throw new TestnetError(`the Chord example has no chord-node v${chord}`)
  const clientBundle = setup.bundles.client.get(chord)
  const classUpgrades: ClassUpgrade[] = [{
    oldClass: setup.nodeClass,
    newClass: setup.nodeClass,
    bundle: nodeBundle.root,
    bundleSize: nodeBundle.size,
    schedule: { name: plan.schedule, ...(Object.keys(plan.params).length > 0 ? { params: plan.params } : {}) }
  }]
  if (clientBundle != null) {
    classUpgrades.push({
      oldClass: setup.clientClass,
      newClass: setup.clientClass,
      bundle: clientBundle.root,
      bundleSize: clientBundle.size,
      // clients after every server: no new client meets an old server. The roster is not a
      // manifest parameter (a parameter holds 1024 characters: 19 peer ids); each client's fleet
      // view counts every node instead (set by the launcher), and minFirst makes a client that
      // has not heard of them all wait
      schedule: { name: 'class-order', params: { first: setup.nodeClass, minFirst: plan.roster.length } }
    })
  }
  const unsigned = await createManifest({ system: SYSTEM, version, previous: previous.cid, classUpgrades, createdAt: Date.now() })
  const manifest = await signManifest(unsigned, setup.releaseKey)
  await writeFile(join(setup.dataDir, `manifest-${version}.bin`), encodeSignedManifest(manifest))
  return { manifest, pack: [nodeBundle.dir, ...(clientBundle != null ? [clientBundle.dir] : [])] }
}
