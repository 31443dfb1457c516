/**
 * Custom SFs are contained: one that throws, loops forever, answers nonsense or tries to write to
 * its views counts as wait and is reported.
 */
import { describe, expect, it } from 'vitest'
import { evaluateSchedule, NO_CONTROL, ScheduleFailedError, ScheduleTimeoutError, seededRandom, simulate, type FleetView, type ScheduleFunction, type ScheduleInput } from '../../src/schedule/index.ts'

const view: FleetView = { get: () => undefined, contacts: () => [], control: NO_CONTROL }
const input: ScheduleInput = {
  self: { peer: 'a', class: 'app', version: 0, target: 1, phase: 'waiting', seq: 1, since: 0, tags: { group: 'g' }, replicas: ['b'], servers: [], observers: { load: 3 } },
  view,
  params: { rate: 0.5 },
  now: 0,
  random: seededRandom(1, 'a')
}

describe('evaluateSchedule', () => {
  it('passes a good decision through', () => {
    const result = evaluateSchedule(() => ({ decision: 'upgrade', reason: 'ok' }), input)
    expect(result.error).toBeUndefined()
    expect(result.decision).toEqual({ decision: 'upgrade', reason: 'ok' })
  })

  it('a throwing SF counts as wait and is reported', () => {
    const result = evaluateSchedule(() => { throw new Error('boom') }, input)
    expect(result.decision.decision).toBe('wait')
    expect(result.error).toBeInstanceOf(ScheduleFailedError)
    expect(result.error?.message).toContain('boom')
  })

  it('an SF that loops forever is cut off at its budget', () => {
    const loop: ScheduleFunction = () => { for (;;) { /* spin */ } }
    const result = evaluateSchedule(loop, input, { timeoutMs: 20 })
    expect(result.decision.decision).toBe('wait')
    expect(result.error).toBeInstanceOf(ScheduleTimeoutError)
    // and the next SF runs normally
    expect(evaluateSchedule(() => ({ decision: 'upgrade' }), input).decision.decision).toBe('upgrade')
  })

  it('an async SF or a malformed answer counts as wait', () => {
    const asyncSf = (async () => ({ decision: 'upgrade' })) as unknown as ScheduleFunction
    expect(evaluateSchedule(asyncSf, input).error).toBeInstanceOf(ScheduleFailedError)
    expect(evaluateSchedule((() => ({ decision: 'now!' })) as unknown as ScheduleFunction, input).error).toBeInstanceOf(ScheduleFailedError)
    expect(evaluateSchedule((() => null) as unknown as ScheduleFunction, input).error).toBeInstanceOf(ScheduleFailedError)
  })

  it('the views are read-only', () => {
    const writes: ScheduleFunction = ({ self, params, view }) => {
      (self.replicas as string[]).push('x')
      ;(params as Record<string, unknown>).rate = 1
      ;(view as { get: unknown }).get = null
      return { decision: 'upgrade' }
    }
    const result = evaluateSchedule(writes, input)
    expect(result.decision.decision).toBe('wait')
    expect(result.error).toBeInstanceOf(ScheduleFailedError)
    expect(input.self.replicas).toEqual(['b'])
    expect(input.params.rate).toBe(0.5)
  })

  it('in the simulator, a throwing custom SF holds every node and each failure is counted', () => {
    const r = simulate({ nodes: 50, schedule: () => { throw new Error('bad') }, crashesPerNodeHour: 0 })
    expect(r.upgraded).toBe(0)
    expect(r.sfErrors).toBe(r.evaluations)
    expect(r.sfErrors).toBeGreaterThan(0)
  })

  it('in the simulator, a looping custom SF is cut off and holds its node', () => {
    const r = simulate({ nodes: 4, schedule: () => { for (;;) { /* spin */ } }, evalTimeoutMs: 5, crashesPerNodeHour: 0, contacts: 1, groupSize: 2 })
    expect(r.upgraded).toBe(0)
    expect(r.sfErrors).toBe(r.evaluations)
  })
})
