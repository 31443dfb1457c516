/**
 * The live view of a run. On a terminal it redraws a compact table (ANSI): each member's Chord
 * version and phase, a progress bar, ops ok / failed / refused, the schedule and halts. Elsewhere
 * (CI, `--json`) it prints a plain progress line to stderr every few seconds instead.
 *
 * @packageDocumentation
 */
import { versionLabel } from './chord.ts'
import { isHalted, latencies, opTotal, percentile, UPGRADING_PHASES, WAITING_PHASES, type MemberTrack, type Recorder } from './recorder.ts'

/** Where the view writes. */
export interface ViewIO {
  /** a terminal that takes ANSI redraws */
  tty: boolean
  /** terminal width, columns */
  columns: number
  write(text: string): void
  /** plain progress lines (stderr) */
  line(text: string): void
}

/** What the header shows. */
export interface ViewInfo {
  nodes: number
  clients: number
  schedule: string
  target: number
  mode: string
}

/** A running view. */
export interface View {
  /** the current stage, shown in the header (and printed as a line) */
  stage(text: string): void
  /** a detail of the stage (printed as a line only when it changed) */
  detail(text: string): void
  /** stops redrawing; the last frame stays */
  stop(): void
}

const ESC = '\x1b['
const color = (code: number, text: string, on: boolean): string => on ? `${ESC}${code}m${text}${ESC}0m` : text

/** A progress bar of `width` cells. */
export function bar (done: number, total: number, width: number): string {
  const f = total > 0 ? Math.min(1, done / total) : 0
  const full = Math.round(f * width)
  return '█'.repeat(full) + '░'.repeat(width - full)
}

/** `12.3 s` from ms. */
export function secs (ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

/** A member's phase as one word. */
export function phaseOf (t: MemberTrack): string {
  if (!t.alive) return 'down'
  const s = t.status
  if (s == null) return 'starting'
  if (s.halted) return 'HALTED'
  if (s.upgrading != null) {
    const p = s.upgrading.phase
    if (!WAITING_PHASES.has(p)) return p
    // before it quiesces, its status record says more: an intent, or a halted rollout
    if (s.fleetPhase === 'intent' || s.fleetPhase === 'halted') return s.fleetPhase
    return p === 'future-installed' ? 'future' : p
  }
  return s.fleetPhase
}

/** Counts of members at or past the target. */
function progress (rec: Recorder, target: number): { nodes: number, nodesAt: number, clients: number, clientsAt: number, halts: number } {
  let nodes = 0; let nodesAt = 0; let clients = 0; let clientsAt = 0; let halts = 0
  for (const t of rec.members.values()) {
    const at = t.status != null && t.status.version >= target
    if (t.role === 'node') { nodes++; if (at) nodesAt++ } else { clients++; if (at) clientsAt++ }
    if (t.status != null && isHalted(t.status)) halts++
  }
  return { nodes, nodesAt, clients, clientsAt, halts }
}

/** One line on ops: totals, ratio, recent latency. */
function opsLine (rec: Recorder, useColor: boolean): string {
  const { ok, failed, refused, untyped } = rec.totals
  const total = opTotal(rec.totals)
  const now = Date.now()
  const recent = latencies(rec.opLog.slice(-4000), now - 5000, now)
  const ratio = total > 0 ? `${(100 * ok / total).toFixed(2)} %` : '-'
  const fail = failed + refused + untyped > 0 ? (s: string) => color(31, s, useColor) : (s: string) => s
  return `ops ${total}  ok ${ok}  ${fail(`failed ${failed}  refused ${refused}`)}${untyped > 0 ? color(31, `  untyped ${untyped}`, useColor) : ''}  ok ${ratio}` +
    (recent.length > 0 ? `  p50 ${percentile(recent, 50).toFixed(1)} ms  p99 ${percentile(recent, 99).toFixed(1)} ms (last 5 s)` : '')
}

/** Starts the view. */
export function startView (rec: Recorder, info: ViewInfo, io: ViewIO): View {
  let stage = 'starting'
  let detail = ''
  let stopped = false
  const started = Date.now()
  const elapsed = (): string => `t+${secs(Date.now() - started)}`

  const frame = (): string => {
    const c = io.tty
    const p = progress(rec, rec.target)
    const lines: string[] = []
    lines.push(`${color(1, 'molt testnet', c)}  ${info.nodes} nodes + ${info.clients} clients (${info.mode})  schedule ${info.schedule}  target ${versionLabel(rec.target)} (system ${rec.target})  ${elapsed()}`)
    lines.push(`stage: ${stage}${detail !== '' ? ` (${detail})` : ''}`)
    lines.push(`${bar(p.nodesAt, p.nodes, 30)} ${p.nodesAt}/${p.nodes} nodes at ${versionLabel(rec.target)}  clients ${p.clientsAt}/${p.clients}  halts ${p.halts > 0 ? color(31, String(p.halts), c) : '0'}`)
    lines.push(opsLine(rec, c))
    const cells = [...rec.members.values()].map(t => {
      const v = t.status != null ? versionLabel(t.status.version) : '--'
      const ph = phaseOf(t)
      const text = `${t.name} ${v} ${ph}`.padEnd(24).slice(0, 24)
      if (!c) return text
      if (!t.alive) return color(31, text, c)
      if (t.status != null && t.status.version >= rec.target) return color(32, text, c)
      const phase = t.status?.upgrading?.phase
      if (phase != null && (UPGRADING_PHASES.has(phase) || phase === 'admitted')) return color(33, text, c)
      return text
    })
    const perRow = Math.max(1, Math.floor(io.columns / 25))
    for (let i = 0; i < cells.length; i += perRow) lines.push(cells.slice(i, i + perRow).join(' '))
    for (const n of rec.notes.slice(-4)) lines.push(`note t+${secs(n.at - started)}: ${n.text}`)
    return lines.map(l => l + `${ESC}K`).join('\n')
  }

  const plain = (): string => {
    const p = progress(rec, rec.target)
    const { ok, failed, refused, untyped } = rec.totals
    const total = opTotal(rec.totals)
    return `testnet: ${elapsed()} ${stage}: ${p.nodesAt}/${p.nodes} nodes and ${p.clientsAt}/${p.clients} clients at ${versionLabel(rec.target)}, ops ${total} (ok ${ok}, failed ${failed}, refused ${refused}, untyped ${untyped}), halts ${p.halts}`
  }

  let lastNote = 0
  const draw = (): void => {
    if (stopped) return
    if (io.tty) {
      io.write(`${ESC}H${frame()}\n${ESC}J`)
    } else {
      for (const n of rec.notes.slice(lastNote)) io.line(`testnet: note: ${n.text}`)
    }
    lastNote = rec.notes.length
  }
  if (io.tty) io.write(`${ESC}2J${ESC}?25l`)
  const timer = setInterval(draw, io.tty ? 250 : 1000)
  const plainTimer = io.tty ? undefined : setInterval(() => { io.line(plain()) }, 5000)
  timer.unref()
  plainTimer?.unref()
  return {
    stage (text) {
      stage = text
      detail = ''
      if (!io.tty) io.line(`testnet: ${elapsed()} ${text}`)
      draw()
    },
    detail (text) {
      if (text === detail) return
      detail = text
      if (!io.tty && text !== '') io.line(`testnet: ${elapsed()} ${stage}: ${text}`)
    },
    stop () {
      if (stopped) return
      draw()
      stopped = true
      clearInterval(timer)
      if (plainTimer != null) clearInterval(plainTimer)
      if (io.tty) io.write(`${ESC}?25h\n`)
    }
  }
}
