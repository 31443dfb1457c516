/**
 * Real libp2p nodes (memory transport, local profile) each carrying an upgrade layer, and a tiny
 * in-process host: one object per version, SOs delegating to the next object in their chain.
 *
 * The app is the papers' Archive → Cache example (HotOS'03 §7.1):
 *   v1 Archive: add(x), has(x), trail()           (a set that only grows)
 *   v2 Cache:   add(x), has(x), remove(x), trail() (a set that can shrink)
 *   v3 Cache:   same type as v2 plus size()
 * The future-SO for v2 on a v1 node cannot implement remove by calling the Archive: it refuses.
 * `trail()` returns which implementations the call went through, e.g. ['past@1', 'current@2'].
 */
import { createOverlay, type MoltLibp2p } from '../../src/overlay/index.ts'
import { createUpgradeLayer, type InvokeRequest, type LayerState, type UpgradeLayer, type UpgradeLayerInit } from '../../src/layer/index.ts'
import { memoryAddress } from '../helpers.ts'

export const SYSTEM = 'ltest'

type Method = (...args: unknown[]) => unknown
type Obj = Record<string, Method>

export class SimulationRefused extends Error {
  override name = 'SimulationRefusedError'
}

/** The store the current object keeps (the node's state). */
export interface AppNode {
  libp2p: MoltLibp2p
  layer: UpgradeLayer
  items: Set<string>
  /** objects by the version they implement */
  objects: Map<number, Obj>
  /** every target the layer dispatched to, in order */
  targets: InvokeRequest['target'][]
  /** installs the SO of `version` (past or future, by its position relative to the current one) */
  install: (version: number) => void
  stop: () => Promise<void>
}

function current (version: number, items: Set<string>): Obj {
  const obj: Obj = {
    add: (x) => { items.add(String(x)); return null },
    has: (x) => items.has(String(x)),
    trail: () => [`current@${version}`],
    fail: () => { throw new TypeError('the app broke') },
    big: () => 'x'.repeat(70_000),
    weird: () => ({ f: undefined }),
    slow: async () => { await new Promise(resolve => setTimeout(resolve, 300)); return 'slow done' }
  }
  if (version >= 2) {
    obj.remove = (x) => items.delete(String(x))
  }
  if (version >= 3) {
    obj.size = () => items.size
  }
  return obj
}

/** A future-SO for `version`, calling `next` (the object of `version - 1`). */
function futureSO (version: number, next: () => Obj): Obj {
  return {
    add: (x) => next().add!(x),
    has: (x) => next().has!(x),
    trail: () => [`future@${version}`, ...(next().trail!() as string[])],
    remove: (x) => {
      if (version === 2) {
        // the Archive cannot shrink: removing here would make v1 and v2 clients disagree
        throw new SimulationRefused(`remove(${String(x)}) cannot be simulated on an Archive`)
      }
      return next().remove!(x)
    },
    size: () => { throw new SimulationRefused('size is not simulated') }
  }
}

/** A past-SO for `version`, calling `next` (the object of `version + 1`). */
function pastSO (version: number, next: () => Obj): Obj {
  return {
    add: (x) => next().add!(x),
    has: (x) => next().has!(x),
    trail: () => [`past@${version}`, ...(next().trail!() as string[])]
  }
}

export async function appNode (state: Partial<LayerState> & { version: number }, init: Partial<UpgradeLayerInit> = {}): Promise<AppNode> {
  const libp2p = await createOverlay({ system: SYSTEM, profile: 'local', listen: [memoryAddress()] })
  const items = new Set<string>()
  const objects = new Map<number, Obj>()
  const targets: InvokeRequest['target'][] = []
  let layer: UpgradeLayer | undefined
  const lookup = (v: number) => (): Obj => {
    const o = objects.get(v)
    if (o == null) throw new Error(`no object for version ${v}`)
    return o
  }
  const install = (v: number): void => {
    const V = layer?.state.version ?? state.version
    objects.set(v, v > V ? futureSO(v, lookup(v - 1)) : pastSO(v, lookup(v + 1)))
  }
  objects.set(state.version, current(state.version, items))
  for (const v of [...(state.past ?? []), ...(state.future ?? [])]) install(v)
  layer = createUpgradeLayer({ libp2p }, {
    system: SYSTEM,
    state: { class: 'cache', ...state },
    invoke: ({ target, method, args }) => {
      targets.push(target)
      const fn = objects.get(target.version)?.[method]
      if (fn == null) throw new Error(`no method ${method} at version ${target.version}`)
      return fn(...args)
    },
    ...init
  })
  await layer.start()
  const l = layer
  return {
    libp2p,
    layer: l,
    items,
    objects,
    targets,
    install,
    async stop () {
      await l.stop()
      await libp2p.stop()
    }
  }
}

/** Connects every node to every other. */
export async function mesh (nodes: AppNode[]): Promise<void> {
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      await nodes[i]!.libp2p.dial(nodes[j]!.libp2p.getMultiaddrs())
    }
  }
}
