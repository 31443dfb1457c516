/**
 * Every built-in SF, run in the simulator (the same SF code behind the same fleet-view interface)
 * over repeated seeded runs with gossip delay, loss, crashes and restarts; each property is proved
 * from the recorded status timeline.
 */
import { describe, expect, it } from 'vitest'
import { parseWaves, simNodeId, simulate, waveOf, type Scenario, type SimulationResult, type TimelineEntry } from '../../src/schedule/index.ts'

const SEEDS = [1, 2, 3, 4, 5]

function run (scenario: Scenario): SimulationResult & { timeline: TimelineEntry[] } {
  const result = simulate({ ...scenario, timeline: true })
  return result as SimulationResult & { timeline: TimelineEntry[] }
}

/** When each node started upgrading (first time) and finished, from the timeline. */
function upgradeTimes (r: { timeline: TimelineEntry[] }, n: number): { start: number[], done: number[], since: number[] } {
  const start = new Array<number>(n).fill(Infinity)
  const done = new Array<number>(n).fill(Infinity)
  const since = new Array<number>(n).fill(Infinity)
  for (const e of r.timeline) {
    if (e.phase === 'waiting' && since[e.node] === Infinity) since[e.node] = e.t
    if (e.phase === 'upgrading' && start[e.node] === Infinity) start[e.node] = e.t
    if (e.phase === 'running' && e.version === 1 && done[e.node] === Infinity) done[e.node] = e.t
  }
  return { start, done, since }
}

/** The most members of one group upgrading at once, replayed from the timeline. */
function maxConcurrentPerGroup (r: { timeline: TimelineEntry[], groupOf?: Int32Array }): number {
  const down = new Map<number, number>()
  const isDown = new Set<number>()
  let max = 0
  for (const e of r.timeline) {
    const g = r.groupOf![e.node]!
    if (e.phase === 'upgrading' && !isDown.has(e.node)) {
      isDown.add(e.node)
      down.set(g, (down.get(g) ?? 0) + 1)
      max = Math.max(max, down.get(g)!)
    } else if (e.phase !== 'upgrading' && isDown.has(e.node)) {
      isDown.delete(e.node)
      down.set(g, down.get(g)! - 1)
    }
  }
  return max
}

const network: Partial<Scenario> = { gossipDelayMs: { min: 20, max: 2000 }, lossRate: 0.05, crashesPerNodeHour: 0.5 }

describe('built-in schedules in the simulator', () => {
  it('eager: every node upgrades', () => {
    for (const seed of SEEDS) {
      const r = run({ nodes: 300, schedule: 'eager', seed, ...network })
      expect(r.upgraded).toBe(300)
    }
  })

  it('one-replica-at-a-time: never two members of a group down at once, under delay, loss and crashes', () => {
    for (const seed of SEEDS) {
      const r = run({ nodes: 400, schedule: 'one-replica-at-a-time', groupSize: 5, seed, ...network, params: { settleMs: 500 } })
      expect(r.upgraded).toBe(400)
      expect(maxConcurrentPerGroup(r)).toBe(1)
      expect(r.maxDownPerGroup).toBe(1)
    }
  })

  it('one-replica-at-a-time: a settle time far below the gossip delay is still safe (acknowledgements, not timing)', () => {
    for (const seed of SEEDS) {
      const r = run({ nodes: 200, schedule: 'one-replica-at-a-time', groupSize: 6, seed, gossipDelayMs: { min: 100, max: 8000 }, lossRate: 0.2, params: { settleMs: 0 } })
      expect(r.upgraded).toBe(200)
      expect(maxConcurrentPerGroup(r)).toBe(1)
    }
  })

  it('after-my-servers: no client starts before all of its servers run the new version', () => {
    for (const seed of SEEDS) {
      const r = run({ nodes: 300, servers: 20, serversPerClient: 3, schedule: 'after-my-servers', seed, ...network })
      expect(r.upgraded).toBe(300)
      const { start, done } = upgradeTimes(r, 300)
      for (let c = 20; c < 300; c++) {
        for (const s of r.serversOf![c]!) {
          expect(start[c]).toBeGreaterThan(done[s]!)
        }
      }
    }
  })

  it('class-order: no node of the second class starts before every node of the first has upgraded', () => {
    for (const seed of SEEDS) {
      const r = run({ nodes: 300, servers: 8, serversPerClient: 8, schedule: 'class-order', params: { first: 'server' }, seed, ...network })
      expect(r.upgraded).toBe(300)
      const { start, done } = upgradeTimes(r, 300)
      const lastServer = Math.max(...done.slice(0, 8))
      const firstClient = Math.min(...start.slice(8))
      expect(firstClient).toBeGreaterThan(lastServer)
    }
  })

  it('canary: only the listed nodes upgrade until the release, then everyone does', () => {
    const n = 200
    const listed = [3, 77, 150]
    const releaseAt = 900_000
    for (const seed of SEEDS) {
      const r = run({
        nodes: n, schedule: 'canary', seed, ...network,
        params: { peers: listed.map(i => simNodeId(i, n)).join(',') },
        control: [{ at: releaseAt, action: 'release' }]
      })
      expect(r.upgraded).toBe(n)
      const { start } = upgradeTimes(r, n)
      const before = start.flatMap((t, i) => t < releaseAt ? [i] : [])
      expect(before.sort((a, b) => a - b)).toEqual(listed)
    }
  })

  it('gradual: the fraction gone after m periods is 1 - (1 - rate)^m within a binomial tolerance', () => {
    const n = 2000
    const rate = 0.2
    const period = 10_000
    for (const seed of SEEDS) {
      const r = run({ nodes: n, schedule: 'gradual', seed, params: { rate, periodMs: period }, crashesPerNodeHour: 0 })
      expect(r.upgraded).toBe(n)
      const { start, since } = upgradeTimes(r, n)
      for (const m of [1, 2, 4]) {
        const p = 1 - (1 - rate) ** m
        const gone = start.filter((t, i) => t - since[i]! <= m * period).length
        const sigma = Math.sqrt(n * p * (1 - p))
        // 5 standard deviations: a false failure once in ~3.5 million runs
        expect(Math.abs(gone - n * p)).toBeLessThanOrEqual(5 * sigma)
      }
      // and no node ever goes before its first period ends
      expect(start.every((t, i) => t - since[i]! >= period)).toBe(true)
    }
  })

  it('waves: a failing member halts every node still waiting until the upgrader resumes', () => {
    const n = 400
    const params = { waves: '2%,10%,50%,100%', soakMs: 1_200_000 }
    const list = parseWaves(params)
    const wave = Array.from({ length: n }, (_, i) => waveOf(simNodeId(i, n), list, ''))
    const failing = wave.indexOf(0)
    const resumeAt = 3 * 3_600_000
    for (const seed of SEEDS) {
      const r = run({
        nodes: n, schedule: 'waves', seed, params, ...network, crashesPerNodeHour: 0,
        failUpgrade: [failing],
        control: [{ at: resumeAt, action: 'resume' }]
      })
      const { start } = upgradeTimes(r, n)
      const failedAt = r.timeline.find(e => e.node === failing && e.phase === 'failed')!.t
      expect(failedAt).toBeLessThan(params.soakMs)
      // before the resume only wave-0 nodes went, and every node of a later wave halted
      for (let i = 0; i < n; i++) {
        if (wave[i] !== 0) {
          expect(start[i]).toBeGreaterThan(resumeAt)
          expect(r.timeline.some(e => e.node === i && e.phase === 'halted' && e.t < resumeAt)).toBe(true)
        }
      }
      // after the resume the rollout completes
      expect(r.upgraded).toBe(n)
    }
  })

  it('strangers: records of peers no schedule counts are dropped unread', () => {
    const r = run({ nodes: 200, schedule: 'one-replica-at-a-time', strangers: 50, ...network })
    expect(r.strangerRecordsDropped).toBe(50)
    expect(maxConcurrentPerGroup(r)).toBe(1)
    expect(r.upgraded).toBe(200)
  })

  it('is deterministic for a seed', () => {
    const a = simulate({ nodes: 300, schedule: 'gradual', seed: 9 })
    const b = simulate({ nodes: 300, schedule: 'gradual', seed: 9 })
    expect({ ...a, wallMs: 0 }).toEqual({ ...b, wallMs: 0 })
  })
})
