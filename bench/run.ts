/**
 * `npm run bench -- <name> [flags]`: runs `bench/<name>.ts`, whose default export takes the flags
 * and returns the figures. The last line printed is one JSON object `{"bench":"<name>", ...}`.
 */
import { readdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

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

const { values } = parseArgs({ args: rest, strict: false })
const mod = await import(pathToFileURL(`${here}/${name}.ts`).href) as { default: Benchmark }
const figures = await mod.default(values as Record<string, string | boolean | undefined>)
process.stdout.write(`${JSON.stringify({ bench: name, ...figures })}\n`)
process.exit(0)
