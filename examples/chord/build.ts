/**
 * Builds the Chord example's bundles in memory: one self-contained ES module (`index.js`) per
 * class and version, bundled by esbuild with no externals, so that no bundle resolves anything
 * from `node_modules` at run time and none imports molt (they only import types from it, which
 * vanish). The output is deterministic — same sources, same bytes, same CID — because esbuild is
 * given a fixed working directory (the path comments it writes are relative to it) and no
 * timestamps or absolute paths reach the output.
 *
 * Versions are named by Chord version; which system version installs which is the deployment's
 * choice (README): system version 0 runs node v1 / client v1, version 1 installs node v2 /
 * client v2, version 2 installs node v3 / client v3.
 *
 * Run directly (`npx tsx examples/chord/build.ts [outDir]`) it writes the bundles to
 * `outDir/<class>-v<N>/index.js` (default `examples/chord/dist`).
 */
import { build } from 'esbuild'
import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The ring member class. */
export const CHORD_NODE = 'chord-node'
/** The client class. */
export const CHORD_CLIENT = 'chord-client'

/** A bundle's files by path (here one entry, `index.js`). */
export type BundleFiles = Map<string, Uint8Array>

/** Every bundle of the example, by class and Chord version. */
export interface ChordBundles {
  node: { v1: BundleFiles, v2: BundleFiles, v3?: BundleFiles }
  client: { v1: BundleFiles, v2: BundleFiles, v3?: BundleFiles }
}

const HERE = dirname(fileURLToPath(import.meta.url))

/** Options of a build. */
export interface ChordBuildOptions {
  /**
   * How many times slower the background jobs (stabilize, fingers, rejoin, anti-entropy, the
   * clients' member refresh) run than `src/config.ts` says: for many nodes on one machine.
   *
   * @default 1
   */
  pace?: number
}

/** Bundles one entry module of `src/` into `index.js`. */
export async function buildEntry (entry: string, options: ChordBuildOptions = {}): Promise<BundleFiles> {
  const pace = options.pace ?? 1
  if (!Number.isFinite(pace) || pace < 1) throw new RangeError(`pace: expected a number ≥ 1, got ${String(pace)}`)
  const result = await build({
    // pace 1 leaves the output byte for byte as without it
    ...(pace !== 1 ? { define: { CHORD_PACE: String(pace) } } : {}),
    absWorkingDir: HERE,
    entryPoints: [join('src', entry)],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    write: false,
    outfile: 'index.js',
    charset: 'utf8',
    legalComments: 'none',
    logLevel: 'silent'
  })
  const out = result.outputFiles.find(f => f.path.endsWith('index.js'))
  if (out == null) throw new Error(`esbuild produced no index.js for ${entry}`)
  return new Map([['index.js', out.contents]])
}

const built = new Map<number, Promise<ChordBundles>>()

/** Builds (once per process and pace) every bundle of the example. */
export async function buildChordBundles (options: ChordBuildOptions = {}): Promise<ChordBundles> {
  const pace = options.pace ?? 1
  let bundles = built.get(pace)
  if (bundles == null) {
    bundles = (async () => {
      const [n1, n2, n3, c1, c2, c3] = await Promise.all(['node-v1.ts', 'node-v2.ts', 'node-v3.ts', 'client-v1.ts', 'client-v2.ts', 'client-v3.ts'].map(async entry => await buildEntry(entry, { pace })))
      return { node: { v1: n1!, v2: n2!, v3: n3! }, client: { v1: c1!, v2: c2!, v3: c3! } }
    })()
    built.set(pace, bundles)
    bundles.catch(() => { built.delete(pace) })
  }
  return await bundles
}

async function main (): Promise<void> {
  const out = process.argv[2] ?? join(HERE, 'dist')
  const bundles = await buildChordBundles()
  for (const [name, versions] of [[CHORD_NODE, bundles.node], [CHORD_CLIENT, bundles.client]] as const) {
    for (const [version, files] of Object.entries(versions)) {
      for (const [path, bytes] of files ?? []) {
        const file = join(out, `${name}-${version}`, path)
        await mkdir(dirname(file), { recursive: true })
        await writeFile(file, bytes)
        console.log(`${file} (${bytes.length} bytes)`)
      }
    }
  }
}

if (process.argv[1] != null && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(err)
    process.exitCode = 1
  })
}
