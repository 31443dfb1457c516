/**
 * `npm run bench -- <name> [flags]`: runs `bench/<name>.ts`, whose default export takes the flags
 * and returns the figures. The last line printed is one JSON object `{"bench":"<name>", ...}`.
 */
import { readdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** What every benchmark module exports by default. */
export type Benchmark = (flags: Record<string, string | boolean | undefined>) => Promise<Record<string, unknown>>

const here = dirname(fileURLToPath(import.meta.url))
const names = (await readdir(here)).filter(f => f.endsWith('.ts') && f !== 'run.ts').map(f => f.slice(0, -3)).sort()
const [name, ...rest] = process.argv.slice(2)

if (name == null || name === '--help' || name === '-h' || !names.includes(name)) {
  const out = name == null || name === '--help' || name === '-h' ? process.stdout : process.stderr
  if (name != null && name !== '--help' && name !== '-h') {
    out.write(`bench: unknown benchmark "${name}"\n`)
  }
  out.write(`usage: npm run bench -- <name> [--flag value ...]\nbenchmarks: ${names.join(', ')}\n`)
  process.exit(name == null || name === '--help' || name === '-h' ? 0 : 2)
}

/** `--flag value`, `--flag=value` or a bare `--flag` (true); benchmarks validate their own flags. */
function parseFlags (args: string[]): Record<string, string | boolean> {
  const flags: Record<string, string | boolean> = {}
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    if (!arg.startsWith('--')) {
      process.stderr.write(`bench: unexpected argument "${arg}"\n`)
      process.exit(2)
    }
    const eq = arg.indexOf('=')
    if (eq > 0) {
      flags[arg.slice(2, eq)] = arg.slice(eq + 1)
    } else if (i + 1 < args.length && !(args[i + 1] as string).startsWith('--')) {
      flags[arg.slice(2)] = args[++i] as string
    } else {
      flags[arg.slice(2)] = true
    }
  }
  return flags
}

const mod = await import(pathToFileURL(`${here}/${name}.ts`).href) as { default: Benchmark }
const figures = await mod.default(parseFlags(rest))
process.stdout.write(`${JSON.stringify({ bench: name, ...figures })}\n`)
process.exit(0)
