/**
 * Chord v1's wire (system version 0). Records are `{ key, value, stamp: [t, writer] }`; there is
 * no deletion and no replication. `serveV1` answers the v1 wire from any `ChordApi` (the v1 node
 * itself, or — in v2's past-SO — a v2 node); `callV1` speaks it to a v1 object (a remote v1 node,
 * or — in v2's future-SO — the local v1 object), refusing what v1 cannot do.
 */
import { CONFIG } from './config.ts'
import { bad, id, list, map, num, optStr, stamp, str, strs, value } from './check.ts'
import { readAnswer, refused, type ChordApi, type ChordConfig, type Invoke, type Method, type NodeInfo, type Rec, type RingState, type Step, type Value } from './types.ts'
import type { RecordCodec } from './store.ts'

type V1Record = { key: string, value: Value, stamp: [number, string] }

function toV1 (rec: Rec): V1Record {
  return { key: rec.key, value: rec.v as Value, stamp: [rec.t, rec.w] }
}

function fromV1 (v: Value | undefined): Rec {
  const m = map(v, 'record')
  const [t, w] = stamp(m.stamp)
  return { key: str(m.key, 'key'), t, w, v: value(m.value) }
}

function readFromV1 (key: string, v: Value): Rec | null {
  if (v == null) return null
  const m = map(v, 'read')
  const [t, w] = stamp(m.stamp)
  return { key, t, w, v: value(m.value) }
}

/** v1 store layout: `d/<hex key>` → `{ value, stamp }`. */
export const codecV1: RecordCodec = {
  prefix: 'd/',
  encode: (rec) => ({ value: rec.v as Value, stamp: [rec.t, rec.w] }),
  decode: (key, v) => {
    try {
      return readFromV1(key, v) ?? undefined
    } catch {
      return undefined
    }
  }
}

function infoV1 (i: NodeInfo): Value {
  return {
    class: i.class,
    chord: i.chord,
    peer: i.peer,
    id: i.id,
    predecessor: i.pred,
    successor: i.succs[0] ?? null,
    successors: i.succs,
    predecessors: i.preds,
    fingers: i.fingers,
    keys: i.keys,
    primary: i.primary,
    warm: i.warm
  }
}

function infoFromV1 (v: Value): NodeInfo {
  const m = map(v, 'info')
  if (m.class !== 'chord-node') throw bad(`not a chord node: ${String(m.class)}`)
  return {
    class: 'chord-node',
    chord: num(m.chord, 'chord'),
    peer: str(m.peer, 'peer'),
    id: id(m.id, 'id'),
    pred: optStr(m.predecessor, 'predecessor'),
    succs: strs(m.successors, 'successors'),
    preds: strs(m.predecessors, 'predecessors'),
    fingers: strs(m.fingers, 'fingers'),
    keys: num(m.keys, 'keys'),
    tombstones: 0,
    primary: typeof m.primary === 'number' ? m.primary : 0,
    warm: m.warm === true,
    r: 1
  }
}

/** The v1 wire, answered by `api`. */
export function serveV1 (api: ChordApi): Record<string, Method> {
  return {
    info: async () => infoV1(await api.info()),
    config: async () => ({ ...await api.config() }),
    ping: async () => { await api.ping(); return 'pong' },
    state: async () => {
      const s = await api.state()
      return { predecessor: s.pred, successors: s.succs, predecessors: s.preds }
    },
    notify: async ([peer]) => ({ accepted: await api.notify(str(peer, 'peer')) }),
    step: async ([target, avoid]) => {
      const s = await api.step(id(target, 'id'), strs(avoid, 'avoid'))
      const answer: Value = s.done ? { done: true, node: s.node, next: s.next, from: s.from } : { done: false, node: s.node }
      return answer
    },
    findSuccessor: async ([target, avoid]) => {
      const f = await api.lookup(id(target, 'id'), strs(avoid, 'avoid'))
      return { node: f.node, successors: f.succs, from: f.from }
    },
    get: async ([key]) => readAnswer(await api.get(str(key, 'key'))),
    fetch: async ([key]) => readAnswer(await api.peek(str(key, 'key'))),
    put: async ([key, v, s]) => {
      const [t, w] = stamp(s)
      const stored = await api.put({ key: str(key, 'key'), t, w, v: value(v) })
      return { stamp: [stored.t, stored.w] }
    },
    handoff: async ([recs]) => ({ refused: await api.take(list(recs, 'records').map(fromV1)) }),
    dump: async ([after, limit]) => {
      const recs = await api.dump(optStr(after, 'after'), typeof limit === 'number' ? limit : 200)
      return recs.filter(r => r.v !== null).map(r => toV1(r))
    }
  }
}

function stepFromV1 (v: Value): Step {
  const m = map(v, 'step')
  if (m.done === true) return { done: true, node: str(m.node, 'node'), next: strs(m.next, 'next'), from: str(m.from, 'from') }
  return { done: false, node: str(m.node, 'node') }
}

/** The v1 wire, spoken to `invoke`. Deletion and replication do not exist there: they are refused. */
export function callV1 (invoke: Invoke, callMs = CONFIG.callMs): ChordApi {
  return {
    info: async () => infoFromV1(await invoke('info', [], callMs)),
    config: async () => map(await invoke('config', [], callMs), 'config') as unknown as ChordConfig,
    ping: async () => { await invoke('ping', [], callMs) },
    state: async (): Promise<RingState> => {
      const m = map(await invoke('state', [], callMs), 'state')
      return { pred: optStr(m.predecessor, 'predecessor'), succs: strs(m.successors, 'successors'), preds: strs(m.predecessors, 'predecessors') }
    },
    notify: async (peer) => map(await invoke('notify', [peer], callMs), 'notify').accepted === true,
    step: async (target, avoid) => stepFromV1(await invoke('step', [target, avoid], callMs)),
    lookup: async (target, avoid) => {
      const m = map(await invoke('findSuccessor', [target, avoid], callMs * 3), 'found')
      return { node: str(m.node, 'node'), succs: strs(m.successors, 'successors'), from: str(m.from, 'from') }
    },
    get: async (key) => readFromV1(key, await invoke('get', [key], callMs * 2)),
    peek: async (key) => readFromV1(key, await invoke('fetch', [key], callMs)),
    put: async (rec) => {
      if (rec.v === null) {
        // HotOS'03 §7.1 criterion 2: a v1 node cannot forget a key, and a tombstone kept aside
        // would be seen by v2 callers only — v1 callers would still read the value
        throw refused(`delete of "${rec.key}": a Chord v1 node has no notion of deletion`)
      }
      const m = map(await invoke('put', [rec.key, rec.v, [rec.t, rec.w]], callMs * 2), 'put')
      const [t, w] = stamp(m.stamp)
      return { t, w, copies: 1 }
    },
    take: async (recs) => {
      const values = recs.filter(r => r.v !== null)
      const tombstones = recs.filter(r => r.v === null).map(r => r.key)
      if (values.length === 0) return tombstones
      const m = map(await invoke('handoff', [values.map(r => toV1(r) as unknown as Value)], callMs * 2), 'handoff')
      return [...tombstones, ...strs(m.refused, 'refused', 1_000_000)]
    },
    replicate: async () => {
      throw refused('a Chord v1 node keeps no copies for other nodes: its hand-off would push them back to their owner and forget them')
    },
    digest: async () => { throw refused('a Chord v1 node keeps no copies for other nodes') },
    exchange: async () => { throw refused('a Chord v1 node keeps no copies for other nodes') },
    dump: async (after, limit) => list(await invoke('dump', [after, limit], callMs), 'dump').map(fromV1)
  }
}
