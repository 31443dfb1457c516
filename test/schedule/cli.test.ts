/**
 * `molt simulate`, run through the command's own parser.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { simulateCommand } from '../../src/cli/simulate.ts'
import { parse, UsageError } from '../../src/cli/util.ts'

async function run (argv: string[]): Promise<{ code: number, out: string[] }> {
  const out: string[] = []
  const code = await simulateCommand.run(parse(simulateCommand, argv), { out: (l) => out.push(l), err: () => {} })
  return { code, out }
}

describe('molt simulate', () => {
  it('prints the figures and writes the plot', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'molt-sim-'))
    try {
      const svg = join(dir, 'plot.svg')
      const { code, out } = await run(['--nodes', '200', '--schedule', 'one-replica-at-a-time', '--svg', svg])
      expect(code).toBe(0)
      expect(out.join('\n')).toMatch(/time to 100 % upgraded: +[\d.]+ s/)
      expect(out.join('\n')).toMatch(/most of one group down: +1 \(upgrading\)/)
      expect(await readFile(svg, 'utf8')).toMatch(/^<svg[\s\S]*<polyline[\s\S]*<\/svg>\n$/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('--json gives one object', async () => {
    const { out } = await run(['--nodes', '100', '--json', '--param', 'rate=0.5'])
    const figures = JSON.parse(out[0]!) as { nodes: number, upgraded: number }
    expect(figures.nodes).toBe(100)
    expect(figures.upgraded).toBe(100)
  })

  it('refuses an unknown schedule and bad options', async () => {
    await expect(run(['--schedule', 'nope'])).rejects.toBeInstanceOf(UsageError)
    await expect(run(['--delay-ms', 'abc'])).rejects.toBeInstanceOf(UsageError)
    await expect(run(['--control', 'explode@3'])).rejects.toBeInstanceOf(UsageError)
  })
})
