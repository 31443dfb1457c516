/**
 * `npm run bench -- simulate [--nodes 100000] [--schedule gradual] [--seed 1] [--param k=v ...]
 *   [--group-size 5] [--contacts 8] [--loss 0.01] [--svg FILE]`
 *
 * Runs the rollout simulator (the same SF code as a real node, behind the same fleet-view
 * interface) and reports the time to 50 / 90 / 100 % upgraded, the most members of any replica
 * group down at once, and the status traffic per node. Target: 100 000 nodes in under 60 s of
 * wall time on a 2-core machine.
 */
import { writeFile } from 'node:fs/promises'
import { plotSvg, simulate } from '../src/schedule/simulate.ts'
import type { ScheduleParams } from '../src/schedule/types.ts'
import type { Benchmark } from './run.ts'

function params (raw: string | boolean | undefined): ScheduleParams {
  const out: Record<string, string | number> = {}
  for (const kv of typeof raw === 'string' ? raw.split(';') : []) {
    const eq = kv.indexOf('=')
    if (eq <= 0) throw new Error(`--param: expected key=value[;key=value…], got "${kv}"`)
    const value = kv.slice(eq + 1)
    out[kv.slice(0, eq)] = value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value
  }
  return out
}

const bench: Benchmark = async (flags) => {
  const nodes = Number(flags.nodes ?? 100_000)
  const schedule = String(flags.schedule ?? 'gradual')
  const result = simulate({
    nodes,
    schedule,
    seed: Number(flags.seed ?? 1),
    params: params(flags.param),
    ...(flags['group-size'] != null ? { groupSize: Number(flags['group-size']) } : {}),
    ...(flags.contacts != null ? { contacts: Number(flags.contacts) } : {}),
    ...(flags.loss != null ? { lossRate: Number(flags.loss) } : {}),
    ...(flags.servers != null ? { servers: Number(flags.servers) } : {})
  })
  if (typeof flags.svg === 'string') {
    await writeFile(flags.svg, plotSvg(result, `${schedule}, ${nodes} nodes`))
  }
  process.stderr.write(`${result.events} events, ${result.evaluations} SF evaluations, ${result.endS} simulated s, view ${result.viewEntriesMean} entries on average (max ${result.viewEntriesMax})\n`)
  return {
    nodes,
    schedule,
    wall_ms: result.wallMs,
    t50_s: result.t50_s,
    t90_s: result.t90_s,
    t100_s: result.t100_s,
    max_down_per_group: result.maxDownPerGroup,
    status_bytes_per_node_s: result.statusBytesPerNodeS,
    view_entries_max: result.viewEntriesMax,
    view_kb: result.viewKb
  }
}

export default bench
