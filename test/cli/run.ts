/**
 * Running `molt` in-process for tests: captured output, and long-running commands (`molt node`)
 * started in the background and stopped through their abort signal.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { main } from '../../src/cli/main.ts'
import { eventually } from '../helpers.ts'

export interface Run {
  code: number
  out: string[]
  err: string[]
}

/** Runs one command to completion. */
export async function molt (...argv: string[]): Promise<Run> {
  const out: string[] = []
  const err: string[] = []
  const code = await main(argv, { out: l => { out.push(...l.split('\n')) }, err: l => { err.push(l) } })
  return { code, out, err }
}

/** A `molt node` running in the background. */
export interface Background {
  out: string[]
  err: string[]
  /** resolves with the exit status once stopped */
  done: Promise<number>
  /** the value after `<prefix> ` in the first output line that starts with it */
  line(prefix: string): string
  stop(): Promise<number>
}

/** Starts a long-running command and waits until a line starting with `readyPrefix` appears. */
export async function background (argv: string[], readyPrefix: string): Promise<Background> {
  const out: string[] = []
  const err: string[] = []
  const controller = new AbortController()
  const done = main(argv, { out: l => { out.push(...l.split('\n')) }, err: l => { err.push(l) }, signal: controller.signal })
  let exited: number | undefined
  void done.then(c => { exited = c })
  const line = (prefix: string): string => {
    const found = out.find(l => l.startsWith(prefix + ' '))
    if (found == null) {
      throw new Error(`no "${prefix}" line in ${JSON.stringify(out)}`)
    }
    return found.slice(prefix.length + 1)
  }
  await eventually(() => {
    if (exited != null) {
      throw new Error(`exited with ${exited}: ${err.join(' | ')}`)
    }
    return out.some(l => l.startsWith(readyPrefix))
  }, `molt ${argv[0] ?? ''} to print "${readyPrefix}"`)
  return {
    out,
    err,
    done,
    line,
    async stop () {
      controller.abort()
      return await done
    }
  }
}

/** A fresh temporary directory (short path: unix socket paths are limited to ~100 bytes). */
export async function tempDir (): Promise<{ path: string, remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'molt-cli-'))
  return { path, remove: async () => { await rm(path, { recursive: true, force: true }) } }
}
