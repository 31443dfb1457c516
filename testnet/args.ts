/**
 * The testnet's command line: strict parsing of `npm run testnet -- [flags]` into
 * {@link TestnetOptions}. An unknown flag or a bad value is a {@link TestnetUsageError}.
 *
 * @packageDocumentation
 */
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { BUILTIN_SCHEDULES } from '../src/index.ts'
import { parseParams, UsageError } from '../src/cli/util.ts'
import { TestnetUsageError } from './errors.ts'

/** Faults injected during the rollout. */
export interface FaultPlan {
  /** node processes SIGKILLed mid-rollout and restarted from their data directories */
  kill: number
  /** cut the ring in two mid-rollout, then heal it */
  partition: boolean
}

/** Everything a run is told. */
export interface TestnetOptions {
  /** chord-node members */
  nodes: number
  /** chord-client members, each running a workload */
  clients: number
  /** the chord-node upgrade's scheduling function */
  schedule: string
  /** its parameters */
  params: Record<string, string | number | boolean | null>
  /** the Chord version to reach (2 = system version 1) */
  to: number
  faults: FaultPlan
  /** restart nodes one at a time instead of upgrading: the baseline */
  control: boolean
  /** every member in this process, on the memory transport, with one shared store */
  inProcess: boolean
  /** the bench line on stdout, plain progress on stderr */
  json: boolean
  /** leave the testnet running until interrupted */
  keep: boolean
  /** client ops to run at least */
  ops: number
  /** steady-state window before the publish, ms */
  steadyMs: number
  /** seed of every random choice of the launcher */
  seed: number
  /** the testnet's data directory (wiped at start) */
  dataDir: string
  /** where the report goes */
  reportDir: string
  /** bound of the whole run, ms */
  timeoutMs: number
}

/**
 * The default schedule of the chord-node upgrade. `one-replica-at-a-time` over replica groups of
 * consecutive ring nodes: a Chord key lives on a node and its successors, so never taking two
 * members of an arc down at once keeps every key reachable while the arcs upgrade in parallel.
 * `eager` takes the whole ring down at once (every op in that instant is retried); `gradual` is a
 * coin per period, so its duration is random and adjacent nodes may still coincide.
 */
export const DEFAULT_SCHEDULE = 'one-replica-at-a-time'

export const USAGE = `Usage: npm run testnet -- [options]

Starts a local Chord testnet (one process per node on loopback), runs a client
workload, publishes the next Chord version signed by the testnet's release key
through a random peer, shows the rollout live, checks that no acknowledged write
was lost, and writes testnet-report/ (summary.json, index.html, SVG plots).

Options:
  --nodes N            chord-node members (default 16)
  --clients N          client members, each with its own workload (default 3)
  --schedule NAME      scheduling function of the chord-node upgrade (default
                       ${DEFAULT_SCHEDULE}; one of ${Object.keys(BUILTIN_SCHEDULES).join(', ')});
                       clients follow with class-order (after every node)
  --param KEY=VALUE    a parameter of that schedule (repeatable)
  --to VERSION         the Chord version to reach: 2 (default) or 3 (v2, v3 accepted)
  --faults LIST        comma-separated: kill=K (SIGKILL K node processes
                       mid-rollout, restart them from their data dirs),
                       partition (cut the ring in two, then heal it)
  --control            the same run restarting nodes one at a time without
                       upgrading: the baseline of what an upgrade costs
  --in-process         every member in this process on the memory transport,
                       one shared store with a sub-level per node (for 100+ nodes)
  --json               plain progress on stderr; the last stdout line is the
                       bench JSON
  --keep               leave the testnet running (molt status / molt publish
                       --data <node dir>) until Ctrl-C
  --ops N              client ops to run at least (default 10000)
  --steady SECONDS     steady-state window before the publish (default 10)
  --seed N             seed of the launcher's random choices (default: random)
  --data DIR           the testnet's data directory, wiped at start
                       (default testnet-data)
  --report DIR         where the report goes (default testnet-report)
  --timeout SECONDS    give up after this long (default 900; --in-process: 20 per
                       node, at least 900)
  -h, --help           show this help

Exit status: 0 when every check passes (no lost write, every node at the
target version, ok ratio >= 99.9 %, every failed op typed), 1 otherwise, 2 for
a bad option.`

/** What `parseTestnetArgs` returns: options, or a request for the usage. */
export type ParsedTestnetArgs = { help: true } | { help: false, options: TestnetOptions }

const FLAGS = {
  nodes: { type: 'string' },
  clients: { type: 'string' },
  schedule: { type: 'string' },
  param: { type: 'string', multiple: true },
  to: { type: 'string' },
  faults: { type: 'string' },
  control: { type: 'boolean' },
  'in-process': { type: 'boolean' },
  json: { type: 'boolean' },
  keep: { type: 'boolean' },
  ops: { type: 'string' },
  steady: { type: 'string' },
  seed: { type: 'string' },
  data: { type: 'string' },
  report: { type: 'string' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

/** A safe integer in [min, max], or the fallback when the flag is absent. */
function integer (value: string | undefined, flag: string, fallback: number, min: number, max: number): number {
  if (value == null) return fallback
  if (!/^\d+$/.test(value.trim())) {
    throw new TestnetUsageError(`--${flag}: expected a whole number, got ${JSON.stringify(value)}`)
  }
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new TestnetUsageError(`--${flag}: expected a number from ${min} to ${max}, got ${value}`)
  }
  return n
}

/** Seconds (decimals allowed) in [min, max], as milliseconds. */
function seconds (value: string | undefined, flag: string, fallbackMs: number, min: number, max: number): number {
  if (value == null) return fallbackMs
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new TestnetUsageError(`--${flag}: expected seconds from ${min} to ${max}, got ${JSON.stringify(value)}`)
  }
  return Math.round(n * 1000)
}

/** `kill=K,partition` → a fault plan. */
export function parseFaults (value: string | undefined, nodes: number): FaultPlan {
  const plan: FaultPlan = { kill: 0, partition: false }
  if (value == null) return plan
  const parts = value.split(',').map(p => p.trim()).filter(p => p.length > 0)
  if (parts.length === 0) {
    throw new TestnetUsageError('--faults: expected kill=K and/or partition')
  }
  for (const part of parts) {
    const kill = /^kill=(.*)$/.exec(part)
    if (kill != null) {
      plan.kill = integer(kill[1], 'faults kill', 0, 1, Math.max(1, nodes - 1))
    } else if (part === 'partition') {
      plan.partition = true
    } else {
      throw new TestnetUsageError(`--faults: unknown fault ${JSON.stringify(part)} (expected kill=K or partition)`)
    }
  }
  return plan
}

/**
 * Parses the testnet's flags strictly: an unknown flag, a missing value, a positional argument or
 * a value out of range throws {@link TestnetUsageError}.
 */
export function parseTestnetArgs (argv: string[], cwd: string = process.cwd()): ParsedTestnetArgs {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: FLAGS, allowPositionals: false, strict: true })
  } catch (err) {
    const e = err as Error & { code?: string }
    const quoted = /'([^']+)'/.exec(e.message)?.[1]
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      throw new TestnetUsageError(`unknown option ${quoted ?? ''}`.trim())
    }
    if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      throw new TestnetUsageError(`unexpected argument ${quoted != null ? JSON.stringify(quoted) : ''}`.trim())
    }
    throw new TestnetUsageError(e.message.split('. ')[0] ?? e.message)
  }
  const v = parsed.values
  if (v.help === true) return { help: true }

  const nodes = integer(v.nodes, 'nodes', 16, 2, 1000)
  const clients = integer(v.clients, 'clients', 3, 1, 64)
  const schedule = v.schedule ?? DEFAULT_SCHEDULE
  if (!Object.hasOwn(BUILTIN_SCHEDULES, schedule)) {
    throw new TestnetUsageError(`--schedule: "${schedule}" is not a built-in schedule (${Object.keys(BUILTIN_SCHEDULES).join(', ')})`)
  }
  let params: TestnetOptions['params']
  try {
    // typed as `molt publish --param` types them: the same parameters of the same manifest
    params = parseParams(v.param ?? []) ?? {}
  } catch (err) {
    if (err instanceof UsageError) throw new TestnetUsageError(err.message)
    throw err
  }
  let to = 2
  if (v.to != null) {
    const m = /^v?(\d+)$/.exec(v.to.trim())
    if (m == null) throw new TestnetUsageError(`--to: expected a Chord version such as 2 or v2, got ${JSON.stringify(v.to)}`)
    to = Number(m[1])
    if (to < 2 || to > 3) throw new TestnetUsageError(`--to: the Chord example goes from v1 to v2 (or v3): expected 2 or 3, got ${v.to}`)
  }
  const faults = parseFaults(v.faults, nodes)
  const control = v.control === true
  const inProcess = v['in-process'] === true
  if (control && (v.schedule != null || v.param != null || v.to != null)) {
    throw new TestnetUsageError('--control publishes nothing: --schedule, --param and --to do not go with it')
  }
  if (control && (faults.kill > 0 || faults.partition)) {
    throw new TestnetUsageError('--control is the baseline of a plain rollout: --faults does not go with it')
  }
  if (inProcess && faults.kill > 0) {
    throw new TestnetUsageError('--faults kill=K needs node processes to SIGKILL: it does not go with --in-process')
  }
  if (inProcess && control) {
    throw new TestnetUsageError('--control restarts node processes: it does not go with --in-process')
  }
  const seed = v.seed != null ? integer(v.seed, 'seed', 0, 0, 2 ** 31 - 1) : Math.floor(Math.random() * 2 ** 31)
  return {
    help: false,
    options: {
      nodes,
      clients,
      schedule,
      params,
      to,
      faults,
      control,
      inProcess,
      json: v.json === true,
      keep: v.keep === true,
      ops: integer(v.ops, 'ops', 10_000, 0, 10_000_000),
      steadyMs: seconds(v.steady, 'steady', 10_000, 1, 3600),
      seed,
      dataDir: resolve(cwd, v.data ?? 'testnet-data'),
      reportDir: resolve(cwd, v.report ?? 'testnet-report'),
      // one event loop starts and upgrades a 100-node ring at a few seconds a node
      timeoutMs: seconds(v.timeout, 'timeout', inProcess ? Math.max(900_000, 20_000 * nodes) : 900_000, 10, 86_400)
    }
  }
}
