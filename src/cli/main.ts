/**
 * The `molt` command: a thin shell over molt's API. It drives a running node through the node's
 * owner-only admin socket (see `src/node/admin.ts`); docs/cli.md describes every command.
 *
 * `main(argv, io)` runs one command and resolves with its exit status: 0 on success, 1 when it
 * failed while running, 2 for a bad argument. Every failure is one line on stderr,
 * `molt: <command>: <message>`.
 *
 * @packageDocumentation
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { abort, allow, pause, resume, retire } from './control.ts'
import { init, keygen } from './keys.ts'
import { manifest, sign } from './manifest.ts'
import { node, status } from './node.ts'
import { publish } from './publish.ts'
import { simulateCommand } from './simulate.ts'
import { tryUpgrade } from './try-upgrade.ts'
import { parse, UsageError, type CliIO, type Command } from './util.ts'

export type { CliIO } from './util.ts'

const commands: Record<string, Command> = { keygen, init, node, status, publish, sign, pause, resume, abort, retire, allow, 'try-upgrade': tryUpgrade, simulate: simulateCommand }

const subcommands: Record<string, Record<string, Command>> = { manifest }

function overview (): string {
  const lines = ['Usage: molt <command> [options]', '', 'Live, decentralised software upgrades on libp2p.', '', 'Commands:']
  const row = (name: string, summary: string): string => `  ${name.padEnd(18)} ${summary}`
  for (const [name, c] of Object.entries(commands)) {
    lines.push(row(name, c.summary))
  }
  for (const [group, subs] of Object.entries(subcommands)) {
    for (const [name, c] of Object.entries(subs)) {
      lines.push(row(`${group} ${name}`, c.summary))
    }
  }
  lines.push('', 'Run molt <command> --help for a command\'s options.')
  return lines.join('\n')
}

function groupHelp (group: string): string {
  const subs = subcommands[group] ?? {}
  return [`Usage: molt ${group} <${Object.keys(subs).join('|')}> [options]`, '', ...Object.entries(subs).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`)].join('\n')
}

function oneLine (message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim()
}

/**
 * Runs the `molt` command with `argv` (the arguments after `molt`).
 */
export async function main (argv: string[], io: CliIO): Promise<number> {
  const [first, ...rest] = argv
  if (first == null) {
    io.err('molt: missing command (see molt --help)')
    return 2
  }
  if (first === '--help' || first === '-h' || first === 'help') {
    const topic = first === 'help' ? rest[0] : undefined
    if (topic == null) {
      io.out(overview())
      return 0
    }
    const c = commands[topic]
    if (c != null) {
      io.out(c.help)
      return 0
    }
    if (subcommands[topic] != null) {
      io.out(groupHelp(topic))
      return 0
    }
    io.err(`molt: help: unknown command ${JSON.stringify(topic)} (see molt --help)`)
    return 2
  }
  let name = first
  let command = commands[first]
  let args = rest
  const group = subcommands[first]
  if (group != null) {
    const [sub, ...subRest] = rest
    if (sub == null) {
      io.err(`molt: ${first}: missing command, one of ${Object.keys(group).join(', ')} (see molt ${first} --help)`)
      return 2
    }
    if (sub === '--help' || sub === '-h') {
      io.out(groupHelp(first))
      return 0
    }
    command = group[sub]
    name = `${first} ${sub}`
    args = subRest
    if (command == null) {
      io.err(`molt: ${first}: unknown command ${JSON.stringify(sub)} (see molt ${first} --help)`)
      return 2
    }
  }
  if (command == null) {
    io.err(`molt: unknown command ${JSON.stringify(first)} (see molt --help)`)
    return 2
  }
  try {
    const parsed = parse(command, args)
    if (parsed.values.help === true) {
      io.out(command.help)
      return 0
    }
    return await command.run(parsed, io)
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    if (e instanceof UsageError) {
      io.err(`molt: ${name}: ${oneLine(e.message)} (see molt ${name} --help)`)
      return 2
    }
    io.err(`molt: ${name}: ${oneLine(e.message)}`)
    return 1
  }
}

/** Whether this module is the program (run directly, or imported by `bin/molt.js`). */
function isEntry (): boolean {
  const script = process.argv[1]
  if (script == null) {
    return false
  }
  try {
    const real = realpathSync(script)
    const candidates = [
      fileURLToPath(import.meta.url),
      // dist/src/cli/main.js and src/cli/main.ts both sit two or three levels under the package
      fileURLToPath(new URL('../../../bin/molt.js', import.meta.url)),
      fileURLToPath(new URL('../../bin/molt.js', import.meta.url))
    ]
    return candidates.includes(real)
  } catch {
    return false
  }
}

if (isEntry()) {
  const controller = new AbortController()
  let firstSignalAt = 0
  const onSignal = (signal: NodeJS.Signals): void => {
    // started through bin/molt.js on an older Node, a terminal's or pkill's signal reaches this
    // process twice (directly and forwarded by the launcher): only a later repeat means "now"
    if (firstSignalAt !== 0 && Date.now() - firstSignalAt < 1000) {
      return
    }
    if (firstSignalAt !== 0) {
      process.stderr.write(`molt: ${signal} again: exiting at once\n`)
      process.exit(130)
    }
    firstSignalAt = Date.now()
    controller.abort(new Error(`interrupted by ${signal}`))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const io: CliIO = {
    out: (line) => { process.stdout.write(line + '\n') },
    err: (line) => { process.stderr.write(line + '\n') },
    signal: controller.signal
  }
  main(process.argv.slice(2), io).then((code) => {
    process.exitCode = code
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    // everything molt opened is closed by now; a stray handle of a dependency must not keep
    // the command alive
    setTimeout(() => { process.exit(code) }, 2000).unref()
  }, (err: unknown) => {
    process.stderr.write(`molt: ${oneLine(String(err))}\n`)
    process.exit(1)
  })
}
