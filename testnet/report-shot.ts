/**
 * `npm run report:shot [-- REPORT_DIR [OUT.png]]`: renders the testnet report's `index.html` in
 * headless Chromium (Debian's `chromium`, /usr/bin/chromium; `apt-get install -y chromium`) to a
 * PNG, by default `testnet-report/report.png`.
 *
 * @packageDocumentation
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** Where Chromium is looked for, in order (`CHROMIUM` overrides). */
const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome']

/** The page's size in the screenshot. */
const WINDOW = { width: 1100, height: 3400 }

/** Finds Chromium, or undefined. */
export function findChromium (): string | undefined {
  const env = process.env.CHROMIUM
  if (env != null && env !== '') return env
  return CANDIDATES.find(p => existsSync(p))
}

/**
 * Renders `html` to `png` with headless Chromium; resolves with the PNG's path. Rejects when
 * Chromium is missing, fails, or writes nothing within `timeoutMs`.
 */
export async function shoot (html: string, png: string, timeoutMs = 60_000): Promise<string> {
  const chromium = findChromium()
  if (chromium == null) {
    throw new Error('chromium not found (install it: apt-get install -y chromium; or set CHROMIUM=/path/to/chromium)')
  }
  if (!existsSync(html)) throw new Error(`${html} does not exist: run npm run testnet first`)
  const profile = await mkdtemp(join(tmpdir(), 'molt-report-shot-'))
  try {
    await rm(png, { force: true })
    const args = [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${profile}`, '--hide-scrollbars',
      `--window-size=${WINDOW.width},${WINDOW.height}`,
      `--screenshot=${png}`,
      pathToFileURL(html).href
    ]
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn(chromium, args, { stdio: ['ignore', 'pipe', 'pipe'] })
      let text = ''
      child.stdout.on('data', (c: Buffer) => { text += c.toString() })
      child.stderr.on('data', (c: Buffer) => { text += c.toString() })
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`chromium did not finish within ${timeoutMs / 1000} s`)) }, timeoutMs)
      child.on('error', (err) => { clearTimeout(timer); reject(err) })
      child.on('exit', () => { clearTimeout(timer); resolve(text) })
    })
    const info = await stat(png).catch(() => undefined)
    if (info == null || info.size === 0) throw new Error(`chromium wrote no screenshot:\n${output.slice(-2000)}`)
    return png
  } finally {
    await rm(profile, { recursive: true, force: true })
  }
}

if (process.argv[1] != null && fileURLToPath(import.meta.url) === process.argv[1]) {
  const dir = resolve(process.argv[2] ?? 'testnet-report')
  const out = resolve(process.argv[3] ?? join(dir, 'report.png'))
  try {
    const png = await shoot(join(dir, 'index.html'), out)
    process.stdout.write(`${png}\n`)
  } catch (err) {
    process.stderr.write(`report:shot: ${(err as Error).message}\n`)
    process.exit(1)
  }
}
