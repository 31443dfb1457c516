/**
 * The networked fleet view on 12 real nodes (memory transport, local profile) plus a stranger.
 * The upgrade itself is a stand-in: when a node's SF says go, the node marks itself upgrading, is
 * down for a moment, then runs the new version, each step published in its status record. Every
 * property is proved from the recorded status timeline.
 */
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createFleetView, encodeSignedStatus, oneReplicaAtATime, parseWaves, signStatus, statusTopic, waitForSchedule, waveOf, waves,
  type NetworkFleetView, type ScheduleFunction, type ScheduleParams, type StatusRecord
} from '../../src/schedule/index.ts'
import { makeGenesis, makeKeys } from '../fixtures.ts'
import { eventually } from '../helpers.ts'
import { startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { PrivateKey } from '@libp2p/interface'

const N = 12
const GROUP = 4
const SYSTEM = 'sched'

interface Member {
  node: MoltNode
  key: PrivateKey
  peer: string
  view: NetworkFleetView
  group: string
}

interface Entry { t: number, peer: string, phase: StatusRecord['phase'], version: number }

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

async function connect (a: MoltNode, b: MoltNode): Promise<void> {
  await a.libp2p.dial(b.libp2p.getMultiaddrs())
}

/** The stand-in upgrade: down for `ms`, then at `target` (or failed). */
async function fakeUpgrade (view: NetworkFleetView, target: number, ms: number, fail = false): Promise<void> {
  await view.update({ phase: 'upgrading', defer: null })
  await sleep(ms)
  await view.update(fail ? { phase: 'failed', healthy: false, version: target } : { phase: 'running', version: target })
}

/** Runs a rollout of `target` on every member; resolves when every member has gone or been stopped. */
async function rollout (members: Member[], schedule: ScheduleFunction, params: ScheduleParams, target: number, seed: number, signal: AbortSignal, fail: Set<string> = new Set()): Promise<void> {
  await Promise.allSettled(members.map(async (m, i) => {
    await waitForSchedule({ view: m.view, schedule, params, target, seed, trusted: true, evalEveryMs: 100, signal })
    await fakeUpgrade(m.view, target, 150 + ((i * 37 + seed * 11) % 200), fail.has(m.peer))
  }))
}

describe('fleet view on real nodes', () => {
  const members: Member[] = []
  const timeline: Entry[] = []
  let stranger: { node: MoltNode, key: PrivateKey, view: NetworkFleetView }
  const all: MoltNode[] = []

  beforeAll(async () => {
    const genesis = await makeGenesis(await makeKeys(), SYSTEM)
    for (let i = 0; i < N; i++) {
      const key = await generateKeyPair('Ed25519')
      const node = await startNode(genesis, { privateKey: key })
      all.push(node)
      members.push({ node, key, peer: node.peerId.toString(), view: undefined as unknown as NetworkFleetView, group: `g${Math.floor(i / GROUP)}` })
    }
    const key = await generateKeyPair('Ed25519')
    const strangerNode = await startNode(genesis, { privateKey: key })
    all.push(strangerNode)
    // every group fully connected, groups chained, the stranger next to group 0
    for (let i = 0; i < N; i++) {
      for (let j = i + 1; j < N; j++) {
        if (members[i]!.group === members[j]!.group || j === i + GROUP) await connect(members[i]!.node, members[j]!.node)
      }
    }
    for (let i = 0; i < GROUP; i++) await connect(strangerNode, members[i]!.node)
    for (const m of members) {
      const replicas = members.filter(o => o.group === m.group && o !== m).map(o => o.peer)
      m.view = createFleetView({ libp2p: m.node.libp2p, privateKey: m.key }, { system: SYSTEM, class: 'app', tags: { group: m.group }, replicas, announceMs: 300 })
      m.view.events.addEventListener('status:published', (e) => { timeline.push({ t: performance.now(), peer: m.peer, phase: e.detail.phase, version: e.detail.version }) })
      await m.view.start()
    }
    const view = createFleetView({ libp2p: strangerNode.libp2p, privateKey: key }, { system: SYSTEM, class: 'app', tags: { group: 'g0' }, announceMs: 300 })
    await view.start()
    stranger = { node: strangerNode, key, view }
    // every node hears every replica
    await eventually(() => members.every(m => m.view.counted().replicas.every(r => m.view.get(r) != null)), 'every replica heard', 30_000)
  }, 60_000)

  afterAll(async () => {
    await Promise.allSettled([...members.map(async m => { await m.view.stop() }), stranger?.view.stop()])
    await stopAll(all)
  })

  it('one-replica-at-a-time: never two members of a group down at once, while a stranger claims "upgraded" and "failed"', async () => {
    const controller = new AbortController()
    const rejected: string[] = []
    for (const m of members) m.view.events.addEventListener('status:rejected', (e) => { rejected.push(`${m.peer}/${e.detail.reason}`) })
    // the stranger: valid records of its own saying upgraded, then failed, and a forged record of node 0
    const noise = (async () => {
      let k = 0
      while (!controller.signal.aborted) {
        await stranger.view.update(k++ % 2 === 0 ? { phase: 'running', version: 9, target: 9 } : { phase: 'failed', healthy: false })
        await sleep(50)
      }
    })()
    const victim = members[0]!
    const forged = await signStatus(SYSTEM, { peer: stranger.node.peerId.toString(), class: 'app', version: 9, target: 9, phase: 'running', healthy: true, tags: { group: 'g0' }, seq: Number.MAX_SAFE_INTEGER - 1, at: 0 }, stranger.key)
    // re-point the signed body at node 0: the signature no longer matches the named peer
    const body = new TextDecoder('latin1').decode(forged.bodyBytes).replace(stranger.node.peerId.toString(), victim.peer)
    const forgedForVictim = encodeSignedStatus({ ...forged, bodyBytes: Uint8Array.from(body, c => c.charCodeAt(0)) })
    for (let i = 0; i < 3; i++) {
      await stranger.node.libp2p.services.pubsub.publish(statusTopic(SYSTEM, 'g0'), forgedForVictim).catch(() => {})
    }

    for (const [target, seed] of [[1, 1], [2, 2]]) {
      const start = timeline.length
      await rollout(members, oneReplicaAtATime, { settleMs: 100 }, target!, seed!, controller.signal)
      // the property, from the timeline of this run
      const down = new Map<string, Set<string>>()
      let max = 0
      for (const e of timeline.slice(start).sort((a, b) => a.t - b.t)) {
        const group = members.find(m => m.peer === e.peer)!.group
        const set = down.get(group) ?? new Set<string>()
        down.set(group, set)
        if (e.phase === 'upgrading') set.add(e.peer)
        else set.delete(e.peer)
        max = Math.max(max, set.size)
      }
      expect(max).toBe(1)
      expect(members.every(m => m.view.own().version === target)).toBe(true)
    }
    controller.abort()
    await noise
    // the stranger was never in any view; the forgery was refused, with a typed error, once per node
    for (const m of members) {
      expect(m.view.get(stranger.node.peerId.toString())).toBeUndefined()
      expect(m.view.entries().some(e => e.version === 9)).toBe(false)
    }
    const victims = members.filter(m => m.group === 'g0' && m !== victim)
    await eventually(() => victims.every(m => rejected.includes(`${m.peer}/BadStatusSignatureError`)), 'the forgery refused by group 0')
    for (const m of victims) expect(rejected.filter(r => r === `${m.peer}/BadStatusSignatureError`)).toHaveLength(1)
  }, 60_000)

  it('waves: a failing counted node halts every node still waiting; a stranger\'s "failed" halts nobody', async () => {
    const controller = new AbortController()
    // one group of everyone: every node counts every other
    for (const m of members) m.view.setCounted({ replicas: members.filter(o => o !== m).map(o => o.peer) })
    await eventually(() => members.every(m => m.view.counted().replicas.every(r => m.view.get(r) != null)), 'every peer heard', 30_000)
    // a salt that puts one or two nodes in wave 0 of "10%, 100%"
    let salt = 0
    const pick = (s: number): string[] => members.filter(m => waveOf(m.peer, parseWaves({ waves: '10%,100%' }), String(s)) === 0).map(m => m.peer)
    while (pick(salt).length < 1 || pick(salt).length > 2) salt++
    const wave0 = pick(salt)
    const params = { waves: '10%,100%', soakMs: 600_000, salt: String(salt) }
    const target = 3
    const strangerFails = stranger.view.update({ phase: 'failed', healthy: false, target, version: target })
    const halted = new Set<string>()
    for (const m of members) m.view.events.addEventListener('status:published', (e) => { if (e.detail.phase === 'halted' && e.detail.target === target) halted.add(m.peer) })
    const run = rollout(members, waves, params, target, 3, controller.signal, new Set(wave0.slice(0, 1)))
    await strangerFails
    // the wave-0 nodes went despite the stranger; the first of them failed; every other node halts
    const others = members.filter(m => !wave0.includes(m.peer))
    await eventually(() => others.every(m => halted.has(m.peer)), 'every waiting node halted', 30_000)
    expect(members.filter(m => m.peer === wave0[0]).every(m => m.view.own().phase === 'failed')).toBe(true)
    expect(others.every(m => m.view.own().version < target)).toBe(true)
    // the upgrader aborts: nobody else goes
    for (const m of members) m.view.setControl({ paused: false, aborted: true, released: false, resumedAt: 0 })
    await sleep(300)
    expect(others.every(m => m.view.own().version < target && m.view.own().phase !== 'upgrading')).toBe(true)
    controller.abort()
    await run
  }, 60_000)
})
