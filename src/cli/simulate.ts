/**
 * `molt simulate`: tries a rollout plan on a modelled fleet before it runs on a real one. The same
 * SF code as a real node runs behind the same fleet-view interface (src/schedule/simulate.ts).
 */
import { resolve } from 'node:path'
import { BUILTIN_SCHEDULES, InvalidScenarioError, plotSvg, simulate, type MsRange, type Scenario, type ScenarioControl } from '../schedule/index.ts'
import { flag, int, list, parseParams, seconds, str, UsageError, writeFileAtomic, type Command, type ParsedArgs } from './util.ts'

function msRange (args: ParsedArgs, name: string): MsRange | undefined {
  const v = str(args, name)
  if (v == null) return undefined
  const m = /^(\d+(?:\.\d+)?)(?:[-:](\d+(?:\.\d+)?))?$/.exec(v)
  if (m == null) throw new UsageError(`--${name}: expected MS or MIN-MAX in milliseconds, got ${JSON.stringify(v)}`)
  const min = Number(m[1])
  const max = m[2] != null ? Number(m[2]) : min
  if (max < min) throw new UsageError(`--${name}: MIN above MAX`)
  return { min, max }
}

function fraction (args: ParsedArgs, name: string): number | undefined {
  const v = str(args, name)
  if (v == null) return undefined
  const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : NaN
  if (!Number.isFinite(n)) throw new UsageError(`--${name}: expected a number ≥ 0, got ${JSON.stringify(v)}`)
  return n
}

function controls (args: ParsedArgs): ScenarioControl[] {
  return list(args, 'control').map(v => {
    const m = /^(release|pause|unpause|resume|abort)@(\d+(?:\.\d+)?)$/.exec(v)
    if (m == null) throw new UsageError(`--control: expected ACTION@SECONDS (release, pause, unpause, resume, abort), got ${JSON.stringify(v)}`)
    return { action: m[1] as ScenarioControl['action'], at: Number(m[2]) * 1000 }
  })
}

const fmt = (v: number | null): string => v == null ? 'never' : `${v} s`

/** `molt simulate` */
export const simulateCommand: Command = {
  summary: 'simulate a rollout plan on a modelled fleet',
  help: `Usage: molt simulate [--nodes N] [--schedule NAME] [--param KEY=VALUE]...
                     [--seed N] [--group-size N] [--contacts N] [--servers N]
                     [--servers-per-client N] [--delay-ms MIN-MAX] [--loss P]
                     [--upgrade-ms MIN-MAX] [--crashes-per-hour R]
                     [--restart-ms MIN-MAX] [--announce S] [--fail I]...
                     [--control ACTION@SECONDS]... [--max-time S]
                     [--svg FILE] [--json] [--force]

Runs the schedule's SF on every node of a modelled fleet (a seeded discrete-
event simulation: gossip delay, message loss, crashes and restarts, upgrade
durations) and prints the time until 50 / 90 / 100 % of the nodes upgraded,
the most members of one replica group down at once, and the status traffic
per node. Try a plan on 100 000 nodes before running it on a real fleet.

  --nodes N              fleet size (default 1000)
  --schedule NAME        ${Object.keys(BUILTIN_SCHEDULES).join(', ')}
                         (default gradual)
  --param KEY=VALUE      a schedule parameter (repeatable); node ids in
                         peers/roster are n0, n1, ... zero-padded (n0007)
  --seed N               random seed (default 1)
  --group-size N         replica group size (default 5)
  --contacts N           peers each node calls, its sample (default 8)
  --servers N            the first N nodes are class "server", the rest
                         "client" (default 0: one class, "app")
  --servers-per-client N servers each client counts (default 3)
  --delay-ms MIN-MAX     delay of one gossip hop (default 20-400)
  --loss P               probability a delivery is lost (default 0.01)
  --upgrade-ms MIN-MAX   how long a node is down to upgrade (default
                         20000-60000)
  --crashes-per-hour R   crashes per node per hour (default 0.01)
  --restart-ms MIN-MAX   how long a crashed node stays down (default
                         10000-120000)
  --announce S           status re-announce period in seconds (default 30)
  --fail I               node I's new version fails its health check
                         (repeatable)
  --control ACTION@S     the upgrader acts at S seconds: release, pause,
                         unpause, resume, abort (repeatable)
  --max-time S           simulated time limit in seconds (default 7 days)
  --svg FILE             write a plot of versions over time
  --json                 print the figures as one JSON object
  --force                replace the SVG file if it exists
  -h, --help             show this help`,
  options: {
    nodes: { type: 'string' },
    schedule: { type: 'string' },
    param: { type: 'string', multiple: true },
    seed: { type: 'string' },
    'group-size': { type: 'string' },
    contacts: { type: 'string' },
    servers: { type: 'string' },
    'servers-per-client': { type: 'string' },
    'delay-ms': { type: 'string' },
    loss: { type: 'string' },
    'upgrade-ms': { type: 'string' },
    'crashes-per-hour': { type: 'string' },
    'restart-ms': { type: 'string' },
    announce: { type: 'string' },
    fail: { type: 'string', multiple: true },
    control: { type: 'string', multiple: true },
    'max-time': { type: 'string' },
    svg: { type: 'string' },
    json: { type: 'boolean' },
    force: { type: 'boolean' }
  },
  positionals: { min: 0, max: 0, names: '' },
  async run (args, io) {
    const schedule = str(args, 'schedule') ?? 'gradual'
    if (BUILTIN_SCHEDULES[schedule] == null) {
      throw new UsageError(`--schedule: "${schedule}" is not built in (${Object.keys(BUILTIN_SCHEDULES).join(', ')})`)
    }
    const loss = fraction(args, 'loss')
    if (loss != null && loss >= 1) throw new UsageError('--loss: expected a probability below 1')
    const scenario: Scenario = {
      nodes: int(args, 'nodes', 1000, 1),
      schedule,
      params: parseParams(list(args, 'param')) ?? {},
      seed: int(args, 'seed', 1),
      groupSize: int(args, 'group-size', 5, 1),
      contacts: int(args, 'contacts', 8),
      servers: int(args, 'servers', 0),
      serversPerClient: int(args, 'servers-per-client', 3),
      gossipDelayMs: msRange(args, 'delay-ms'),
      lossRate: loss,
      upgradeMs: msRange(args, 'upgrade-ms'),
      crashesPerNodeHour: fraction(args, 'crashes-per-hour'),
      restartMs: msRange(args, 'restart-ms'),
      announceMs: seconds(args, 'announce', 30),
      failUpgrade: list(args, 'fail').map(v => int({ values: { fail: v }, positionals: [] }, 'fail', 0)),
      control: controls(args),
      maxTimeMs: str(args, 'max-time') != null ? seconds(args, 'max-time', 0) : undefined
    }
    let result
    try {
      result = simulate(scenario)
    } catch (err) {
      if (err instanceof InvalidScenarioError) throw new UsageError(err.message)
      throw err
    }
    const svg = str(args, 'svg')
    if (svg != null) {
      await writeFileAtomic(resolve(svg), plotSvg(result, `${schedule}, ${result.nodes} nodes, seed ${scenario.seed ?? 1}`), { force: flag(args, 'force') })
    }
    if (flag(args, 'json')) {
      const { samples, timeline, serversOf, groupOf, ...figures } = result
      io.out(JSON.stringify(figures))
      return 0
    }
    io.out(`${result.nodes} nodes, schedule ${schedule}: ${result.upgraded} upgraded, ${result.failed} failed, ${result.halted} halted, ${result.waiting} waiting at ${result.endS} s`)
    io.out(`time to 50 % upgraded:   ${fmt(result.t50_s)}`)
    io.out(`time to 90 % upgraded:   ${fmt(result.t90_s)}`)
    io.out(`time to 100 % upgraded:  ${fmt(result.t100_s)}`)
    io.out(`most of one group down:  ${result.maxDownPerGroup} (upgrading), ${result.maxUnavailablePerGroup} (with crashes)`)
    io.out(`status traffic per node: ${result.statusBytesPerNodeS} B/s; view ${result.viewEntriesMean} records on average, ${result.viewEntriesMax} at most (${result.viewKb} KB)`)
    io.out(`simulated in ${result.wallMs} ms (${result.events} events, ${result.evaluations} SF evaluations${result.sfErrors > 0 ? `, ${result.sfErrors} failed` : ''})`)
    if (svg != null) io.out(`plot written to ${svg}`)
    return 0
  }
}
