/**
 * A molt node in its own process, for the crash-safety test (test/runtime/crash.test.ts): a
 * single-node system that runs an app from its data directory, publishes a signed manifest read
 * from a file, waits until its upgrade is over, then stops cleanly and exits 0.
 *
 * `MOLT_CRASH_AT` (inherited from the parent's environment) makes the upgrade manager SIGKILL
 * this process at that point. Usage: `node --import tsx node-process.ts <config.json>`.
 * One JSON object per stdout line: `{ ready }`, `{ phase }`, `{ published }`, `{ done }`.
 */
import { readFile } from 'node:fs/promises'
import { createMoltNode, type MoltNode } from '../../src/node/index.ts'
import { decodeSignedManifest, genesisFromJSON } from '../../src/manifest/index.ts'

interface Config {
  /** genesis configuration, JSON form */
  genesis: string
  /** the signed manifest to publish, encoded */
  manifest: string
  dataDir: string
  /** bundle directories to pack */
  pack: string[]
  class: string
  /** the upgrade manager's clock (fixed per attempt: only the first attempt's value may be used) */
  clock: number
  /** the version to reach */
  target: number
}

const print = (value: unknown): void => { process.stdout.write(JSON.stringify(value) + '\n') }

const config = JSON.parse(await readFile(process.argv[2] as string, 'utf8')) as Config
let node: MoltNode | undefined

// the parent's end of stdin closes when the parent dies: no orphan outlives the test
process.stdin.on('end', () => { process.exit(70) })
process.stdin.resume()
process.on('SIGTERM', () => {
  void (node?.stop() ?? Promise.resolve()).finally(() => process.exit(143))
})

node = await createMoltNode({
  genesis: genesisFromJSON(JSON.parse(await readFile(config.genesis, 'utf8'))),
  dataDir: config.dataDir,
  profile: 'local',
  listen: [`/memory/crash-node-${process.pid}`],
  fetchBundles: false,
  pack: config.pack,
  app: {
    class: config.class,
    manager: { retryMs: 100, now: () => config.clock },
    host: { startTimeoutMs: 30_000 }
  }
})
const manager = node.app!.manager
node.addEventListener('upgrade:phase', (event) => { print({ phase: event.detail.phase, version: event.detail.version }) })
print({ ready: manager.current.version, resumeAt: manager.phase?.phase ?? null })

const published = await node.publish(await decodeSignedManifest(await readFile(config.manifest)))
print({ published: published.verdict })

while (!(manager.current.version >= config.target && manager.phase == null)) {
  await new Promise(resolve => setTimeout(resolve, 50))
}
print({ done: manager.current.version })
await node.stop()
process.exit(0)
