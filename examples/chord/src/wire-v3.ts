/**
 * Chord v3's wire (system version 2). The client-facing calls are v2's, unchanged (clients are
 * not upgraded at system version 2). Node-to-node calls change: new names, and records as
 * compact tuples `[key, t, writer]` (a tombstone) or `[key, t, writer, value]`, which is also
 * v3's store layout. So a v1 caller on a v3 node crosses two past-SOs: v1 → v2 (shipped in v2's
 * bundle), then v2 → v3 (shipped in v3's).
 */
import { CONFIG } from './config.ts'
import { bad, id, list, map, nums, num, optStr, str, strs, suffix, value } from './check.ts'
import { callClientFacing, serveClientFacing } from './wire-v2.ts'
import type { ChordApi, Invoke, Method, Rec, Step, Value } from './types.ts'
import type { RecordCodec } from './store.ts'

export function toV3 (rec: Rec): Value {
  return rec.v === null ? [rec.key, rec.t, rec.w] : [rec.key, rec.t, rec.w, rec.v]
}

export function fromV3 (v: Value | undefined): Rec {
  const a = list(v, 'record')
  if (a.length !== 3 && a.length !== 4) throw bad('record: expected [key, t, writer, value?]')
  return { key: str(a[0], 'key'), t: num(a[1], 't'), w: str(a[2], 'writer'), v: a.length === 3 ? null : value(a[3]) }
}

/** v3 store layout: `r/<hex key>` → `[t, writer, value]` or `[t, writer]`. */
export const codecV3: RecordCodec = {
  prefix: 'r/',
  encode: (rec) => rec.v === null ? [rec.t, rec.w] : [rec.t, rec.w, rec.v],
  decode: (key, v) => {
    try {
      return fromV3([key, ...list(v, 'record')])
    } catch {
      return undefined
    }
  }
}

/** The v3 wire, answered by `api`. */
export function serveV3 (api: ChordApi): Record<string, Method> {
  return {
    ...serveClientFacing(api),
    ping: async () => { await api.ping(); return 1 },
    ring: async () => {
      const s = await api.state()
      return { p: s.pred, s: s.succs, ps: s.preds }
    },
    notify: async ([peer]) => await api.notify(str(peer, 'peer')),
    route: async ([target, avoid]) => {
      const s = await api.step(id(target, 'id'), strs(avoid, 'avoid'))
      const answer: Value = s.done ? { n: s.node, x: s.next, f: s.from } : { n: s.node }
      return answer
    },
    give: async ([recs]) => await api.take(list(recs, 'records').map(fromV3)),
    push: async ([recs]) => { const r = list(recs, 'records').map(fromV3); await api.replicate(r); return r.length },
    sums: async ([lo, hi, sfx, sums]) => await api.digest(id(lo, 'lo'), id(hi, 'hi'), suffix(sfx), nums(sums, 32, 'sums')),
    swap: async ([lo, hi, sfx, recs]) => (await api.exchange(id(lo, 'lo'), id(hi, 'hi'), suffix(sfx), list(recs, 'records').map(fromV3))).map(toV3)
  }
}

function stepFromV3 (v: Value): Step {
  const m = map(v, 'route')
  if (m.x !== undefined) return { done: true, node: str(m.n, 'node'), next: strs(m.x, 'next'), from: str(m.f, 'from') }
  return { done: false, node: str(m.n, 'node') }
}

/** The v3 wire, spoken to `invoke`. */
export function callV3 (invoke: Invoke, callMs = CONFIG.callMs): ChordApi {
  return {
    ...callClientFacing(invoke, callMs),
    ping: async () => { await invoke('ping', [], callMs) },
    state: async () => {
      const m = map(await invoke('ring', [], callMs), 'ring')
      return { pred: optStr(m.p, 'pred'), succs: strs(m.s, 'succs'), preds: strs(m.ps, 'preds') }
    },
    notify: async (peer) => (await invoke('notify', [peer], callMs)) === true,
    step: async (target, avoid) => stepFromV3(await invoke('route', [target, avoid], callMs)),
    take: async (recs) => strs(await invoke('give', [recs.map(toV3)], callMs * 2), 'refused', 1_000_000),
    replicate: async (recs) => { await invoke('push', [recs.map(toV3)], callMs) },
    digest: async (lo, hi, sfx, sums) => list(await invoke('sums', [lo, hi, sfx, sums], callMs), 'sums').map(x => num(x, 'bucket')),
    exchange: async (lo, hi, sfx, recs) => list(await invoke('swap', [lo, hi, sfx, recs.map(toV3)], callMs * 2), 'swap').map(fromV3)
  }
}
