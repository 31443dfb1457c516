/**
 * Computing a bundle's root CID and size without a running node (for `molt init
 * --class-bundle`): the directory is packed into a throwaway in-memory bundle store on a libp2p
 * node that listens nowhere and provides nothing. Packing is deterministic, so a node that later
 * packs the same directory (`molt node --pack DIR`) stores and serves exactly this CID.
 */
import { MemoryDatastore } from 'datastore-core'
import { createBundleService } from '../bundle/index.ts'
import { createOverlay } from '../overlay/index.ts'
import { CliError } from './util.ts'
import type { CID } from 'multiformats/cid'

/** The root CID and size `dir` packs to. */
export async function bundleOf (system: string, dir: string): Promise<{ cid: CID, size: number }> {
  const libp2p = await createOverlay({ system, profile: 'local', listen: [] })
  const bundles = createBundleService({ libp2p, datastore: new MemoryDatastore() }, { system, provide: false })
  try {
    await bundles.start()
    return await bundles.pack(dir)
  } catch (err) {
    throw new CliError(`${dir}: cannot pack it (${(err as Error).message})`)
  } finally {
    await bundles.stop()
    await libp2p.stop()
  }
}
