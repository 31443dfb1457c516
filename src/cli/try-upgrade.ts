/**
 * `molt try-upgrade`: the dry run of an upgrade on a snapshot of a node's store (what
 * Substrate's try-runtime is to its migrations). When a node runs on the data directory, the
 * node takes the snapshot itself (admin `try-upgrade`); otherwise the closed store's files are
 * copied and the copy is tried. The original store is never written.
 */
import { stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { tryUpgradeOffline, type DryRunReport, type TryUpgradeOptions } from '../manager/dry-run.ts'
import { adminRequest, AdminUnavailableError, type AdminRequest } from '../node/admin.ts'
import { CliError, flag, int, parseCid, parseClassPair, required, seconds, str, UsageError, type CliIO, type Command } from './util.ts'

type TryRequest = Extract<AdminRequest, { op: 'try-upgrade' }>

/** Prints a report for people. */
function print (report: DryRunReport, io: CliIO): void {
  const entries = (n: number): string => `${n} ${n === 1 ? 'entry' : 'entries'}`
  const from = report.snapshot === 'live' ? 'a snapshot of the running node\'s store' : report.snapshot === 'copy' ? 'a copy of the closed store' : 'the node\'s store'
  io.out(`upgrade    ${report.class}@${report.fromVersion} → ${report.newClass}@${report.toVersion}`)
  io.out(`bundle     ${report.bundle}`)
  io.out(`snapshot   ${from}: ${entries(report.entries.state)} of state, ${entries(report.entries.futureState)} of future-SO state`)
  io.out(`clock      ${report.now} (seed ${report.seed})`)
  report.timings.transformMs.forEach((ms, i) => {
    const digest = report.digests[i]
    io.out(`run ${i + 1}      ${digest != null ? `digest ${digest}` : 'failed'} (${ms} ms)`)
  })
  io.out(`runs       ${report.agree ? 'agree' : report.digests.length === 2 ? 'DISAGREE' : 'incomplete'}`)
  if (report.invariants != null) {
    io.out(`invariants ${report.invariants.ok ? 'hold' : 'FAIL'}${report.timings.invariantsMs != null ? ` (${report.timings.invariantsMs} ms)` : ''}`)
  }
  for (const failure of report.failures) {
    io.out(`FAILURE    ${failure}`)
  }
  io.out(`time       ${report.ms} ms`)
  io.out(`result     ${report.ok ? 'ok' : 'FAILED'}`)
}

export const tryUpgrade: Command = {
  summary: 'dry-run an upgrade\'s TF and invariants on a snapshot of a node\'s store',
  help: `Usage: molt try-upgrade --data DIR --bundle DIR|CID [--class OLD[:NEW]]
                        [--from-version N] [--to-version N] [--now MS] [--seed N]
                        [--deadline SECONDS] [--json]

Takes a consistent snapshot of the store in DIR, runs the bundle's TF on it
twice (same clock, same seed) and its invariants once, and reports failures,
the digest of the new state, whether the two runs agree and the time taken.
The store is never written. When a node runs on DIR, the node takes the
snapshot itself (through its admin socket, while it keeps serving);
otherwise the closed store's files are copied and the copy is tried.

Exits 1 when a TF run fails, an invariant fails or the two runs disagree.

Options:
  --data DIR          the node's data directory (required)
  --bundle DIR|CID    the new version's bundle: a directory, or the CID of a
                      bundle the node holds (required)
  --class OLD[:NEW]   the class the node runs, and after the upgrade (default:
                      the node's current class, unchanged)
  --from-version N    the version whose state the TF reads (default: the
                      node's current version)
  --to-version N      the version the TF produces (default: from + 1)
  --now MS            the TF's clock, ms since the epoch (default: now)
  --seed N            the seed of the TF's random source (default: 0)
  --deadline SECONDS  deadline of each TF run and of the invariants (default 60)
  --json              print the report as JSON
  -h, --help          show this help`,
  options: {
    data: { type: 'string' },
    bundle: { type: 'string' },
    class: { type: 'string' },
    'from-version': { type: 'string' },
    'to-version': { type: 'string' },
    now: { type: 'string' },
    seed: { type: 'string' },
    deadline: { type: 'string' },
    json: { type: 'boolean' }
  },
  async run (args, io) {
    const dataDir = resolve(required(args, 'data', 'the node\'s data directory'))
    const bundleArg = required(args, 'bundle', 'a bundle directory or CID')
    const classes = str(args, 'class') != null ? parseClassPair(str(args, 'class') as string, '--class') : undefined
    const fromVersion = int(args, 'from-version', undefined, 0)
    const toVersion = int(args, 'to-version', undefined, 0)
    const now = int(args, 'now', undefined, 0)
    const seed = int(args, 'seed', undefined, 0)
    const transformMs = seconds(args, 'deadline', 60)
    if (transformMs <= 0) {
      throw new UsageError('--deadline: expected a positive number of seconds')
    }
    if (fromVersion != null && toVersion != null && toVersion <= fromVersion) {
      throw new UsageError(`--to-version ${toVersion} is not above --from-version ${fromVersion}`)
    }
    const isDir = await stat(bundleArg).then(s => s.isDirectory(), () => false)
    const bundle = isDir ? resolve(bundleArg) : parseCid(bundleArg, '--bundle (neither a directory nor a CID)').toString()

    const fields = {
      ...(classes != null ? { class: classes.oldClass, newClass: classes.newClass } : {}),
      ...(fromVersion != null ? { fromVersion } : {}),
      ...(toVersion != null ? { toVersion } : {}),
      ...(now != null ? { now } : {}),
      ...(seed != null ? { seed } : {}),
      transformMs
    }
    let report: DryRunReport
    try {
      const request: TryRequest = { op: 'try-upgrade', bundle, ...fields }
      report = await adminRequest(dataDir, request, io.signal != null ? { signal: io.signal } : {})
    } catch (err) {
      if (!(err instanceof AdminUnavailableError)) {
        throw err
      }
      // no node answers: the closed store's files are copied, and checked unchanged after the
      // copy (a process that still writes them fails StoreBusyError)
      const options: TryUpgradeOptions = {
        bundle: isDir ? { dir: bundle } : parseCid(bundle, '--bundle'),
        ...fields,
        ...(io.signal != null ? { signal: io.signal } : {})
      }
      report = await tryUpgradeOffline(dataDir, options)
    }
    if (flag(args, 'json')) {
      io.out(JSON.stringify(report, null, 2))
    } else {
      print(report, io)
    }
    if (!report.ok) {
      const [first = 'the dry run failed'] = report.failures
      const more = report.failures.length > 1 ? ` (and ${report.failures.length - 1} more)` : ''
      throw new CliError(`the upgrade would fail: ${first}${more}`)
    }
    return 0
  }
}
