/**
 * `npm run testnet -- [flags]`: a local Chord testnet, a client workload, a live upgrade signed
 * by the testnet's own release key, the checks, and the report. See `--help` and
 * {@link parseTestnetArgs}.
 *
 * Exit status: 0 when every acceptance check passes, 1 when one fails (the reasons are printed)
 * or the run fails, 2 for a bad flag, 130 when interrupted.
 *
 * @packageDocumentation
 */
import { fileURLToPath } from 'node:url'
import { parseTestnetArgs, USAGE } from './args.ts'
import { InterruptedError, TestnetUsageError } from './errors.ts'
import { summaryTable, writeReport } from './report.ts'
import { runTestnet, type TestnetIO } from './scenario.ts'

/**
 * Runs the command with `argv` (the flags only); resolves with the exit status.
 */
export async function main (argv: string[], io?: Partial<TestnetIO>): Promise<number> {
  const out = io?.out ?? ((line: string) => { process.stdout.write(line + '\n') })
  const err = io?.err ?? ((line: string) => { process.stderr.write(line + '\n') })
  let parsed
  try {
    parsed = parseTestnetArgs(argv)
  } catch (e) {
    if (e instanceof TestnetUsageError) {
      err(`testnet: ${e.message}`)
      err('')
      err(USAGE)
      return 2
    }
    throw e
  }
  if (parsed.help) {
    out(USAGE)
    return 0
  }
  const options = parsed.options
  // human output goes to stderr with --json: stdout ends with the bench line
  const say = options.json ? err : out

  const interrupt = new AbortController()
  const onSignal = (): void => {
    if (interrupt.signal.aborted) process.exit(130)
    err('testnet: stopping (again to quit at once)')
    interrupt.abort(new InterruptedError('interrupted'))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const signal = io?.signal != null ? AbortSignal.any([io.signal, interrupt.signal]) : interrupt.signal

  try {
    const result = await runTestnet(options, {
      out,
      err,
      write: io?.write ?? ((text: string) => { process.stdout.write(text) }),
      tty: io?.tty ?? (process.stdout.isTTY === true),
      columns: io?.columns ?? (process.stdout.columns ?? 100),
      signal
    }, async (r) => {
      const report = await writeReport(options.reportDir, r.summary)
      say('')
      for (const line of summaryTable(r.summary)) say(line)
      say(`report     ${report.html}`)
      if (!r.passed) {
        for (const f of r.summary.checks.failures) err(`testnet: check failed: ${f}`)
      }
      if (options.json) out(JSON.stringify(r.summary.bench))
    })
    return result.passed ? 0 : 1
  } catch (e) {
    if (signal.aborted && interrupt.signal.aborted) {
      err('testnet: interrupted')
      return 130
    }
    const error = e as Error
    err(`testnet: ${error.name}: ${error.message}`)
    return 1
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

if (process.argv[1] != null && fileURLToPath(import.meta.url) === process.argv[1]) {
  const code = await main(process.argv.slice(2))
  process.exit(code)
}
