#!/usr/bin/env node
// The molt command. libp2p 3 needs Node.js >= 22; on an older Node this re-executes itself with
// the Node 22 that the project installs from the npm registry (the `node` dev dependency), so
// `molt` works on machines that ship Node 20.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const major = Number(process.versions.node.split('.')[0])

if (major < 22) {
  const candidates = [
    process.env.MOLT_NODE,
    join(here, '..', 'node_modules', 'node', 'bin', 'node'),
    join(here, '..', '..', 'node', 'bin', 'node')
  ].filter((p) => p != null && p !== '' && existsSync(p))
  const node = candidates[0]
  if (node == null) {
    process.stderr.write(`molt: needs Node.js >= 22 (this is ${process.version}); install it, or set MOLT_NODE to its path\n`)
    process.exit(1)
  }
  const child = spawn(node, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' })
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(signal, () => { child.kill(signal) })
  }
  child.on('exit', (code, signal) => {
    if (signal != null) {
      process.kill(process.pid, signal)
    } else {
      process.exit(code ?? 1)
    }
  })
} else {
  const entry = join(here, '..', 'dist', 'src', 'cli', 'main.js')
  if (!existsSync(entry)) {
    process.stderr.write('molt: the build is missing; run `npm install` (or `npm run build`) in the molt folder\n')
    process.exit(1)
  }
  await import(entry)
}
