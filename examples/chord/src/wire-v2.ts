/**
 * Chord v2's wire (system version 1). Wire-incompatible with v1 on purpose: other method names,
 * tuples instead of maps for ring answers, and records `{ k, s: [t, writer], v }` or, for a
 * deletion, the tombstone `{ k, s, d: true }`. New calls: `erase`, `replicate`, and the
 * anti-entropy pair `digest` / `exchange`.
 *
 * Chord v3 keeps the client-facing part of this wire (`info`, `config`, `lookup`, `read`,
 * `peek`, `write`, `erase`, `dump`) unchanged, so clients need no upgrade for v3.
 */
import { CONFIG } from './config.ts'
import { bad, id, list, map, num, nums, optStr, stamp, str, strs, suffix, value } from './check.ts'
import type { ChordApi, ChordConfig, Invoke, Method, NodeInfo, Rec, Step, Value } from './types.ts'
import type { RecordCodec } from './store.ts'

/** A v2 record on the wire. */
export function toV2 (rec: Rec): Value {
  return rec.v === null ? { k: rec.key, s: [rec.t, rec.w], d: true } : { k: rec.key, s: [rec.t, rec.w], v: rec.v }
}

export function fromV2 (v: Value | undefined): Rec {
  const m = map(v, 'record')
  const [t, w] = stamp(m.s)
  return { key: str(m.k, 'k'), t, w, v: m.d === true ? null : value(m.v) }
}

function optRec (v: Value): Rec | null {
  return v == null ? null : fromV2(v)
}

/** v2 store layout: `kv/<hex key>` → `{ s, v }` or `{ s, d: true }`. */
export const codecV2: RecordCodec = {
  prefix: 'kv/',
  encode: (rec): Value => rec.v === null ? { s: [rec.t, rec.w], d: true } : { s: [rec.t, rec.w], v: rec.v },
  decode: (key, v) => {
    try {
      const m = map(v, 'record')
      const [t, w] = stamp(m.s)
      return { key, t, w, v: m.d === true ? null : value(m.v) }
    } catch {
      return undefined
    }
  }
}

export function infoFromWire (v: Value): NodeInfo {
  const m = map(v, 'info')
  if (m.class !== 'chord-node') throw bad(`not a chord node: ${String(m.class)}`)
  return {
    class: 'chord-node',
    chord: num(m.chord, 'chord'),
    peer: str(m.peer, 'peer'),
    id: id(m.id, 'id'),
    pred: optStr(m.pred, 'pred'),
    succs: strs(m.succs, 'succs'),
    preds: strs(m.preds, 'preds'),
    fingers: strs(m.fingers, 'fingers'),
    keys: num(m.keys, 'keys'),
    tombstones: num(m.tombstones, 'tombstones'),
    primary: num(m.primary, 'primary'),
    warm: m.warm === true,
    r: num(m.r, 'r')
  }
}

/** The part of the wire that clients use; v2 and v3 share it. */
export function serveClientFacing (api: ChordApi): Record<string, Method> {
  return {
    info: async () => {
      const i = await api.info()
      return { ...i, successor: i.succs[0] ?? null }
    },
    config: async () => ({ ...await api.config() }),
    lookup: async ([target, avoid]) => {
      const f = await api.lookup(id(target, 'id'), strs(avoid, 'avoid'))
      return [f.node, f.succs, f.from]
    },
    read: async ([key]) => {
      const r = await api.get(str(key, 'key'))
      return r == null ? null : toV2(r)
    },
    peek: async ([key]) => {
      const r = await api.peek(str(key, 'key'))
      return r == null ? null : toV2(r)
    },
    write: async ([rec]) => {
      const r = fromV2(rec)
      if (r.v === null) throw bad('write: a tombstone is written with erase')
      const s = await api.put(r)
      return { s: [s.t, s.w], copies: s.copies }
    },
    erase: async ([key, s]) => {
      const [t, w] = stamp(s)
      const stored = await api.put({ key: str(key, 'key'), t, w, v: null })
      return { s: [stored.t, stored.w], copies: stored.copies }
    },
    dump: async ([after, limit]) => (await api.dump(optStr(after, 'after'), typeof limit === 'number' ? limit : 200)).map(toV2)
  }
}

/** The v2 wire, answered by `api`. */
export function serveV2 (api: ChordApi): Record<string, Method> {
  return {
    ...serveClientFacing(api),
    alive: async () => { await api.ping(); return true },
    neighbours: async () => {
      const s = await api.state()
      return [s.pred, s.succs, s.preds]
    },
    hello: async ([peer]) => await api.notify(str(peer, 'peer')),
    hop: async ([target, avoid]) => {
      const s = await api.step(id(target, 'id'), strs(avoid, 'avoid'))
      return s.done ? [1, s.node, s.next, s.from] : [0, s.node]
    },
    take: async ([recs]) => ({ refused: await api.take(list(recs, 'records').map(fromV2)) }),
    replicate: async ([recs]) => { await api.replicate(list(recs, 'records').map(fromV2)); return true },
    digest: async ([lo, hi, sfx, sums]) => await api.digest(id(lo, 'lo'), id(hi, 'hi'), suffix(sfx), nums(sums, 32, 'sums')),
    exchange: async ([lo, hi, sfx, recs]) => (await api.exchange(id(lo, 'lo'), id(hi, 'hi'), suffix(sfx), list(recs, 'records').map(fromV2))).map(toV2)
  }
}

/** The client-facing calls of the v2 wire (shared with v3), spoken to `invoke`. */
export function callClientFacing (invoke: Invoke, callMs: number): Pick<ChordApi, 'info' | 'config' | 'lookup' | 'get' | 'peek' | 'put' | 'dump'> {
  return {
    info: async () => infoFromWire(await invoke('info', [], callMs)),
    config: async () => map(await invoke('config', [], callMs), 'config') as unknown as ChordConfig,
    lookup: async (target, avoid) => {
      const a = list(await invoke('lookup', [target, avoid], callMs * 3), 'found')
      return { node: str(a[0], 'node'), succs: strs(a[1], 'succs'), from: str(a[2], 'from') }
    },
    get: async (key) => optRec(await invoke('read', [key], callMs * 2)),
    peek: async (key) => optRec(await invoke('peek', [key], callMs)),
    put: async (rec) => {
      const m = map(rec.v === null
        ? await invoke('erase', [rec.key, [rec.t, rec.w]], callMs * 2)
        : await invoke('write', [toV2(rec)], callMs * 2), 'stored')
      const [t, w] = stamp(m.s)
      return { t, w, copies: num(m.copies, 'copies') }
    },
    dump: async (after, limit) => list(await invoke('dump', [after, limit], callMs), 'dump').map(fromV2)
  }
}

function stepFromV2 (v: Value): Step {
  const a = list(v, 'step')
  if (a[0] === 1) return { done: true, node: str(a[1], 'node'), next: strs(a[2], 'next'), from: str(a[3], 'from') }
  return { done: false, node: str(a[1], 'node') }
}

/** The v2 wire, spoken to `invoke`. */
export function callV2 (invoke: Invoke, callMs = CONFIG.callMs): ChordApi {
  return {
    ...callClientFacing(invoke, callMs),
    ping: async () => { await invoke('alive', [], callMs) },
    state: async () => {
      const a = list(await invoke('neighbours', [], callMs), 'neighbours')
      return { pred: optStr(a[0], 'pred'), succs: strs(a[1], 'succs'), preds: strs(a[2], 'preds') }
    },
    notify: async (peer) => (await invoke('hello', [peer], callMs)) === true,
    step: async (target, avoid) => stepFromV2(await invoke('hop', [target, avoid], callMs)),
    take: async (recs) => strs(map(await invoke('take', [recs.map(toV2)], callMs * 2), 'take').refused, 'refused', 1_000_000),
    replicate: async (recs) => { await invoke('replicate', [recs.map(toV2)], callMs) },
    digest: async (lo, hi, sfx, sums) => list(await invoke('digest', [lo, hi, sfx, sums], callMs), 'digest').map(x => num(x, 'bucket')),
    exchange: async (lo, hi, sfx, recs) => list(await invoke('exchange', [lo, hi, sfx, recs.map(toV2)], callMs * 2), 'exchange').map(fromV2)
  }
}
