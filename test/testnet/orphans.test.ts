/**
 * No orphans: a node process exits when the launcher's IPC channel closes, so SIGKILLing the
 * launcher mid-run leaves no node process of that testnet behind. The processes are found by
 * their data directory, which every member process carries on its command line.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, it, expect, afterAll } from 'vitest'
import { TS_EXEC_ARGV } from '../helpers.ts'

const REPO = fileURLToPath(new URL('../../', import.meta.url))

/** Process ids whose command line mentions `text`. */
async function processesWith (text: string): Promise<number[]> {
  const out: number[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.split('\0').includes(text)) out.push(Number(entry))
  }
  return out
}

async function until (check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

describe.runIf(process.platform === 'linux')('no orphan node processes', () => {
  let root: string | undefined
  let launcher: ChildProcess | undefined
  afterAll(async () => {
    launcher?.kill('SIGKILL')
    if (root != null) {
      for (const pid of await processesWith(join(root, 'data'))) {
        try { process.kill(pid, 'SIGKILL') } catch {}
      }
      await rm(root, { recursive: true, force: true })
    }
  })

  it('SIGKILL of the launcher mid-run: every node process of its testnet is gone within seconds', async () => {
    root = await mkdtemp(join(tmpdir(), 'molt-orphans-'))
    const data = join(root, 'data')
    launcher = spawn(process.execPath, [...TS_EXEC_ARGV, 'testnet/main.ts', '--nodes', '3', '--clients', '1', '--json', '--data', data, '--report', join(root, 'report')], { cwd: REPO, stdio: 'ignore' })
    // mid-run: all four member processes run their nodes (each opened its admin socket)
    const sockets = async (): Promise<number> => (await Promise.all(['n00', 'n01', 'n02', 'c0'].map(async m => await readdir(join(data, m)).then(f => f.includes('admin.sock'), () => false)))).filter(Boolean).length
    await until(async () => await sockets() === 4, 'the members are up', 90_000)
    const members = await processesWith(data)
    expect(members.length).toBeGreaterThanOrEqual(4)

    launcher.kill('SIGKILL')
    // "within seconds" is the wait's deadline: the wait throws when a member outlives it
    await until(async () => (await processesWith(data)).length === 0, 'no member process remains', 10_000)
  }, 120_000)
})
