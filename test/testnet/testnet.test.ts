/**
 * The testnet end to end through its real entry point (`node --import tsx testnet/main.ts`, what
 * `npm run testnet` runs): a small testnet of node processes on loopback upgrades from Chord v1
 * to v2 under the default schedule while two clients run their workload; the run exits 0 (no
 * lost write, every member at v2, ok ratio ≥ 99.9 %, every failure typed), its last stdout line
 * is the bench JSON, and the report's JSON, HTML and SVG files parse, the HTML showing the JSON's
 * numbers.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it, expect, afterAll } from 'vitest'
import { parseXml } from './xml.ts'
import type { Summary } from '../../testnet/summary.ts'
import { TS_EXEC_ARGV } from '../helpers.ts'

const REPO = fileURLToPath(new URL('../../', import.meta.url))
const children = new Set<ChildProcess>()

/** Runs the testnet command; resolves with its exit code and output. */
async function testnet (args: string[], timeoutMs: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const child = spawn(process.execPath, [...TS_EXEC_ARGV, 'testnet/main.ts', ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => { stdout += c.toString() })
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const timer = setTimeout(() => { child.kill('SIGINT') }, timeoutMs)
  const code = await new Promise<number | null>(resolve => { child.on('exit', (c) => { resolve(c) }) })
  clearTimeout(timer)
  children.delete(child)
  return { code, stdout, stderr }
}

describe('npm run testnet, end to end', () => {
  let root: string | undefined
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL')
    if (root != null) await rm(root, { recursive: true, force: true })
  })

  it('6 nodes and 2 clients upgrade to Chord v2 with no lost write, and the report parses', async () => {
    root = await mkdtemp(join(tmpdir(), 'molt-testnet-'))
    const data = join(root, 'data')
    const report = join(root, 'report')
    const run = await testnet(['--nodes', '6', '--clients', '2', '--ops', '600', '--steady', '3', '--seed', '11', '--json', '--data', data, '--report', report], 150_000)
    const context = `exit ${run.code}\n--- stderr (tail)\n${run.stderr.slice(-4000)}`
    expect(run.code, context).toBe(0)

    // the bench line is the last line on stdout
    const lines = run.stdout.trim().split('\n')
    const bench = JSON.parse(lines.at(-1) as string) as Record<string, unknown>
    expect(bench).toMatchObject({ bench: 'testnet', nodes: 6, lost_writes: 0, mode: 'rollout' })
    for (const key of ['propagation_ms', 'all_upgraded_ms', 'ops', 'ok_ratio', 'p50_steady_ms', 'p50_rollout_ms', 'p99_steady_ms', 'p99_rollout_ms', 'p50_after_ms', 'p99_after_ms', 'rss_mb_p50']) {
      expect(typeof bench[key], key).toBe('number')
    }
    expect(bench.ok_ratio as number).toBeGreaterThanOrEqual(0.999)

    // summary.json: the same figures, every member at v2, nothing lost
    const summary = JSON.parse(await readFile(join(report, 'summary.json'), 'utf8')) as Summary
    expect(summary.bench).toEqual(bench)
    expect(summary.checks).toMatchObject({ passed: true, lostWrites: 0, unreadableKeys: 0, nodesAtTarget: 6, clientsAtTarget: 2, untypedFailures: 0 })
    expect(summary.checks.checkedKeys).toBeGreaterThan(0)
    expect(summary.members.map(m => m.chord)).toEqual(Array(8).fill('v2'))

    // every SVG is well-formed XML; the HTML too, embedding the plots and showing the JSON's numbers
    const svgs = (await readdir(report)).filter(f => f.endsWith('.svg')).sort()
    expect(svgs).toEqual(['clients.svg', 'memory.svg', 'timeline.svg', 'versions.svg'])
    for (const f of svgs) expect(parseXml(await readFile(join(report, f), 'utf8')).root, f).toBe('svg')
    const html = await readFile(join(report, 'index.html'), 'utf8')
    const doc = parseXml(html)
    expect(doc.root).toBe('html')
    expect(doc.elements.get('svg')).toBe(4)
    for (const [key, value] of Object.entries(summary.bench)) {
      expect(html, key).toContain(`data-key="${key}">${value === null ? '–' : String(value)}</td>`)
    }
    expect(doc.text).toContain('PASS')
  }, 170_000)
})
