/**
 * The run's report, `testnet-report/`: `summary.json` (the {@link Summary}), SVG plots — nodes
 * per version over time (`versions.svg`), client success rate and latency over time
 * (`clients.svg`), each member's upgrade timeline (`timeline.svg`), the node processes' memory
 * (`memory.svg`) — and `index.html`, a
 * self-contained page that shows the JSON's figures in tables and embeds the plots. Also the
 * summary table printed at the end of a run.
 *
 * @packageDocumentation
 */
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { versionLabel } from './chord.ts'
import { UPGRADING_PHASES, WAITING_PHASES } from './recorder.ts'
import { esc, lineChart, timelineChart, type Band, type Marker, type Series, type TimelineRow } from './svg.ts'
import type { BenchLine, Summary, Window } from './summary.ts'

const VERSION_COLORS = ['#8a8a8a', '#2a9d3c', '#4a6fd1', '#b0309a']
const STATE_COLORS: Record<string, string> = {
  running: '#c9c9c9',
  waiting: '#4a6fd1',
  upgrading: '#e08a00',
  upgraded: '#2a9d3c',
  down: '#d12c2c',
  'rolled back': '#b0309a'
}

/** Markers shared by the plots: publishes, kills, restarts (seconds after the start). */
function markersOf (s: Summary): Marker[] {
  const out: Marker[] = []
  for (const p of s.rollout.publishes) out.push({ x: p.atMs / 1000, label: `publish ${versionLabel(p.version)}`, color: '#000' })
  for (const k of s.rollout.kills) out.push({ x: k.atMs / 1000, label: `SIGKILL ${k.name}`, color: '#d12c2c' })
  if (s.run.mode === 'control' && s.series.publishMs != null) out.push({ x: s.series.publishMs / 1000, label: 'restarts begin', color: '#000' })
  return out
}

function bandsOf (s: Summary): Band[] {
  const p = s.rollout.partition
  if (p == null) return []
  return [{ from: p.atMs / 1000, to: (p.healMs ?? p.atMs) / 1000, label: 'partitioned', color: '#d12c2c' }]
}

function xMaxOf (s: Summary): number {
  return Math.max(1, s.run.durationMs / 1000)
}

/** Nodes (and clients) per version over time. */
export function versionsSvg (s: Summary): string {
  const versions = [...new Set(s.series.samples.flatMap(x => [...Object.keys(x.nodes), ...Object.keys(x.clients)]).map(Number))].sort((a, b) => a - b)
  const series: Series[] = []
  versions.forEach((v, i) => {
    series.push({ label: `nodes at ${versionLabel(v)}`, color: VERSION_COLORS[i % VERSION_COLORS.length] as string, points: s.series.samples.map(x => [x.t / 1000, x.nodes[v] ?? 0]) })
  })
  series.push({ label: 'nodes upgrading', color: '#e08a00', points: s.series.samples.map(x => [x.t / 1000, x.upgrading]) })
  versions.forEach((v, i) => {
    series.push({ label: `clients at ${versionLabel(v)}`, color: VERSION_COLORS[i % VERSION_COLORS.length] as string, dashed: true, points: s.series.samples.map(x => [x.t / 1000, x.clients[v] ?? 0]) })
  })
  return lineChart({
    title: `Nodes per version: ${s.run.nodes} nodes, ${s.run.mode === 'control' ? 'control run (restarts)' : `${s.run.from} → ${s.run.to}, ${s.run.schedule ?? ''}`}`,
    xLabel: 'seconds since the start',
    xMax: xMaxOf(s),
    panels: [{ yLabel: 'members', series, yMax: Math.max(s.run.nodes, 1) }],
    markers: markersOf(s),
    bands: bandsOf(s)
  })
}

/** Client success rate and latency per second. */
export function clientsSvg (s: Summary): string {
  const b = s.series.buckets
  const totals = b.map(x => x.ok + x.failed + x.refused + x.untyped)
  const rate: Array<[number, number]> = b.map((x, i) => {
    const total = totals[i] as number
    return [x.t / 1000 + 0.5, total > 0 ? 100 * x.ok / total : Number.NaN]
  })
  const lo = Math.min(99, ...rate.map(r => r[1]).filter(Number.isFinite))
  return lineChart({
    title: `Clients: success rate and latency per second (${s.ops.total} ops)`,
    xLabel: 'seconds since the start',
    xMax: xMaxOf(s),
    panels: [
      { yLabel: 'ops ok (%)', series: [{ label: 'success rate', color: '#2a9d3c', points: rate }], yMin: Math.max(0, Math.floor(lo)), yMax: 100, yTick: v => v.toFixed(1), height: 200 },
      {
        yLabel: 'latency (ms)',
        series: [
          { label: 'p50 latency', color: '#4a6fd1', points: b.map(x => [x.t / 1000 + 0.5, x.p50 ?? Number.NaN]) },
          { label: 'p99 latency', color: '#e08a00', points: b.map(x => [x.t / 1000 + 0.5, x.p99 ?? Number.NaN]) }
        ],
        height: 240
      },
      { yLabel: 'ops / s', series: [{ label: 'ops per second', color: '#555', points: b.map((x, i) => [x.t / 1000 + 0.5, totals[i] as number]) }], height: 120 }
    ],
    markers: markersOf(s),
    bands: bandsOf(s)
  })
}

/** RSS of the node processes over time: median and highest per 2-second bucket. */
export function memorySvg (s: Summary): string {
  const width = 2000
  const xMax = xMaxOf(s)
  const buckets = new Map<number, number[]>()
  for (const m of s.members) {
    if (m.role !== 'node') continue
    const last = new Map<number, number>()
    for (const [t, mb] of m.rss) last.set(Math.floor(t / width), mb)
    for (const [b, mb] of last) {
      let list = buckets.get(b)
      if (list == null) buckets.set(b, list = [])
      list.push(mb)
    }
  }
  const keys = [...buckets.keys()].sort((a, b) => a - b)
  const at = (k: number): number => (k + 0.5) * width / 1000
  const med = keys.map(k => { const l = (buckets.get(k) as number[]).sort((a, b) => a - b); return [at(k), l[Math.floor(l.length / 2)] as number] as [number, number] })
  const max = keys.map(k => [at(k), Math.max(...(buckets.get(k) as number[]))] as [number, number])
  return lineChart({
    title: `Node processes: resident memory (RSS, app worker included)${s.run.inProcess ? ' — not measured in-process' : ''}`,
    xLabel: 'seconds since the start',
    xMax,
    panels: [{
      yLabel: 'MB',
      series: [
        { label: 'median node', color: '#4a6fd1', points: med },
        { label: 'highest node', color: '#d12c2c', points: max },
        { label: '160 MB target', color: '#999', dashed: true, points: [[0, 160], [xMax, 160]] }
      ],
      yMax: Math.max(200, ...max.map(p => p[1])) * 1.05
    }],
    markers: markersOf(s),
    bands: bandsOf(s)
  })
}

/** Each member's states over time, from its phase events and lifecycle marks. */
export function timelineRows (s: Summary): TimelineRow[] {
  const end = s.run.durationMs
  return s.members.map(m => {
    const segments: TimelineRow['segments'] = []
    const marks: NonNullable<TimelineRow['marks']> = []
    // nothing is drawn before the member first started
    let state = 'none'
    let since = 0
    let before = 'running'
    const move = (at: number, next: string): void => {
      if (next === state) return
      segments.push({ from: since, to: at, state })
      state = next
      since = at
    }
    for (const e of m.timeline) {
      const [what, version] = e.what.split('@')
      if (version == null) {
        // lifecycle marks of the launcher: killed / stopped (control) / restarted / exited
        if (what === 'killed' || what === 'stopped' || what === 'exited') {
          if (state !== 'down') before = state
          move(e.at, 'down')
          if (what === 'killed') marks.push({ at: e.at, label: '✕' })
        } else if ((what === 'restarted' || what === 'started') && (state === 'down' || state === 'none')) {
          move(e.at, state === 'none' ? 'running' : before)
        }
      } else if (WAITING_PHASES.has(what as string)) move(e.at, 'waiting')
      else if (UPGRADING_PHASES.has(what as string)) move(e.at, 'upgrading')
      else if (what === 'admitted' || what === 'completed' || what === 'advanced') move(e.at, Number(version) >= s.run.targetSystemVersion ? 'upgraded' : 'running')
      else if (what === 'rolled-back') move(e.at, 'rolled back')
    }
    segments.push({ from: since, to: end, state })
    return { label: `${m.name}${m.role === 'client' ? ' (client)' : ''}`, segments: segments.filter(g => g.state !== 'none'), marks }
  })
}

/** The upgrade timeline of every member. */
export function timelineSvg (s: Summary): string {
  return timelineChart(`Upgrade timeline per member (${s.run.mode === 'control' ? 'control run' : `${s.run.from} → ${s.run.to}`})`, 'seconds since the start', xMaxOf(s),
    timelineRows(s).map(r => ({ ...r, segments: r.segments.map(g => ({ ...g, from: g.from / 1000, to: g.to / 1000 })), marks: r.marks?.map(k => ({ ...k, at: k.at / 1000 })) })),
    STATE_COLORS, markersOf(s))
}

/** A number as the JSON has it (null as "–"). */
function num (v: number | null | undefined): string {
  return v == null || Number.isNaN(v) ? '–' : String(v)
}

/** The member processes' CPU per window, in cores of the machine's. */
function cpuText (s: Summary): string {
  const { nodes: n, clients: c, machine: m } = s.cpu
  const machine = `machine ${num(m.steady)}, ${num(m.rollout)}, ${num(m.after)} cores busy (of ${s.cpu.machineCores})`
  if (n.steady == null && n.rollout == null && n.after == null) return `${machine}; members in-process`
  return `nodes steady ${num(n.steady)}, rollout ${num(n.rollout)}, after ${num(n.after)}; clients ${num(c.steady)}, ${num(c.rollout)}, ${num(c.after)}; ${machine}`
}

const sep = (text: string): string => text !== '' ? `; ${text}` : ''

/** p50 / p99 per kind of op, e.g. `put 5/31 get 3/20 delete 5/30 ms` (empty when no op succeeded). */
function kinds (w: Window): string {
  const parts = Object.entries(w.byKind).map(([kind, l]) => `${kind} ${num(l.p50)}/${num(l.p99)}`)
  return parts.length > 0 ? `${parts.join(' ')} ms` : ''
}

/** The bench figures, each cell tagged with its JSON key. */
function benchTable (bench: BenchLine): string {
  const rows = Object.entries(bench).map(([k, v]) => `<tr><th>${esc(k)}</th><td data-key="${esc(k)}">${esc(typeof v === 'string' ? v : num(v))}</td></tr>`)
  return `<table class="kv" id="bench">${rows.join('')}</table>`
}

function kvTable (id: string, entries: Array<[string, string]>): string {
  return `<table class="kv" id="${id}">${entries.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`
}

/** How the run's faults read: `kill=K partition`, or `none`. */
function faultsText (s: Summary): string {
  const f = s.run.faults
  return `${f.kill > 0 ? `kill=${f.kill} ` : ''}${f.partition ? 'partition' : ''}`.trim() || 'none'
}

/** The HTML page. */
export function reportHtml (s: Summary, svgs: { versions: string, clients: string, timeline: string, memory?: string }): string {
  const c = s.checks
  const verdict = c.passed ? '<p class="pass">PASS: every check holds</p>' : `<p class="fail">FAIL: ${c.failures.map(esc).join('; ')}</p>`
  const members = s.members.map(m => `<tr><td>${esc(m.name)}</td><td>${m.role}</td><td>${esc(m.chord ?? '–')}</td><td>${m.alive ? 'up' : 'down'}</td><td>${num(m.manifestMs)}</td><td>${num(m.upgradedMs)}</td><td>${m.killed}</td><td>${num(m.peakRssMb)}</td><td class="id">${esc(m.peerId ?? '')}</td></tr>`).join('')
  const failures = Object.entries(s.ops.failuresByName).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  const win = (w: Window): string => `${w.ops} ops, p50 ${num(w.p50)} ms, p99 ${num(w.p99)} ms${sep(kinds(w))}`
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>molt testnet report: ${esc(s.run.mode)} ${esc(s.run.from)} → ${esc(s.run.to)}, ${s.run.nodes} nodes</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
table.kv th { background: #f4f4f4; font-weight: normal; }
td.id { font-family: monospace; font-size: 11px; }
.pass { color: #1d7a2f; font-weight: bold; } .fail { color: #b01c1c; font-weight: bold; }
.plots svg { display: block; margin: 12px 0; max-width: 100%; height: auto; border: 1px solid #eee; }
.grid { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
</style>
</head>
<body>
<h1>molt testnet: ${esc(s.run.mode === 'control' ? 'control run (restarts, no upgrade)' : `rollout ${s.run.from} → ${s.run.to}`)}</h1>
<p>${s.run.nodes} chord nodes and ${s.run.clients} clients, ${s.run.inProcess ? 'in one process (memory transport)' : 'one process each (loopback TCP)'}; schedule ${esc(s.run.schedule ?? '–')}${Object.keys(s.run.params).length > 0 ? ' ' + esc(JSON.stringify(s.run.params)) : ''}; faults: ${esc(faultsText(s))}; seed ${s.run.seed}; started ${esc(s.run.startedAt)}, ${(s.run.durationMs / 1000).toFixed(1)} s.</p>
${verdict}
<div class="grid">
<div><h2>Bench figures</h2>
${benchTable(s.bench)}</div>
<div><h2>Checks</h2>
${kvTable('checks', [
    ['lost writes', String(c.lostWrites)],
    ['unreadable keys', String(c.unreadableKeys)],
    ['keys checked', String(c.checkedKeys)],
    ['acknowledged puts / deletes', `${c.ackedPuts} / ${c.ackedDeletes}`],
    ['keys showing a newer unacknowledged write', String(c.newerUnacked)],
    ['nodes at target', `${c.nodesAtTarget} / ${s.run.nodes}`],
    ['clients at target', `${c.clientsAtTarget} / ${s.run.clients}`],
    ['untyped failures', String(c.untypedFailures)],
    ['ok ratio', `${c.okRatio} (minimum ${c.minOkRatio})`]
  ])}</div>
<div><h2>Ops</h2>
${kvTable('ops', [
    ['total', String(s.ops.total)],
    ['ok / failed / refused / untyped', `${s.ops.ok} / ${s.ops.failed} / ${s.ops.refused} / ${s.ops.untyped}`],
    ['retried', String(s.ops.retried)],
    ['failures by name', failures],
    ['steady state', win(s.ops.steady)],
    ['during the rollout', win(s.ops.rollout)],
    ['after the rollout', win(s.ops.after)]
  ])}</div>
<div><h2>Rollout</h2>
${kvTable('rollout', [
    ['published', s.rollout.publishes.map(p => `${versionLabel(p.version)} (system ${p.version}) through ${p.through} at ${(p.atMs / 1000).toFixed(1)} s`).join('; ') || '–'],
    ['propagation (ms)', num(s.rollout.propagationMs)],
    ['all nodes upgraded (ms)', num(s.rollout.nodesUpgradedMs)],
    ['all members upgraded (ms)', num(s.rollout.membersUpgradedMs)],
    ['rolled back / postponed / schedule errors / halts', `${s.rollout.rolledBack} / ${s.rollout.postponed} / ${s.rollout.scheduleErrors} / ${s.rollout.halts}`],
    ['killed', s.rollout.kills.map(k => `${k.name} at ${(k.atMs / 1000).toFixed(1)} s`).join(', ') || '–'],
    ['partition', s.rollout.partition != null
      ? `${(s.rollout.partition.atMs / 1000).toFixed(1)} s → healed ${num(s.rollout.partition.healMs != null ? s.rollout.partition.healMs / 1000 : null)} s; shared-key writes acknowledged while cut: ${s.rollout.partition.sharedWrites.a} | ${s.rollout.partition.sharedWrites.b}, ${s.rollout.partition.keysWrittenOnBothSides} key(s) written on both sides`
      : '–'],
    ['peak RSS per node process p50 / max (MB)', `${num(s.memory.rssMbP50)} / ${num(s.memory.rssMbMax)}`],
    ['CPU of the member processes', cpuText(s)]
  ])}</div>
</div>
<h2>Plots</h2>
<div class="plots">
${svgs.versions.trim()}
${svgs.clients.trim()}
${svgs.timeline.trim()}
${svgs.memory?.trim() ?? ''}
</div>
<h2>Members</h2>
<table id="members"><tr><th>name</th><th>role</th><th>version</th><th>state</th><th>manifest (ms after publish)</th><th>upgraded (ms after publish)</th><th>killed</th><th>peak RSS (MB)</th><th>peer id</th></tr>${members}</table>
${s.notes.length > 0 ? `<h2>Notes</h2><ul>${s.notes.map(n => `<li>${esc(n)}</li>`).join('')}</ul>` : ''}
${s.lost.length > 0 ? `<h2>Lost writes (first ${s.lost.length})</h2><ul>${s.lost.map(l => `<li>${esc(`${l.key}: ${l.reason}; expected ${JSON.stringify(l.expected)}, got ${JSON.stringify(l.got)}`)}</li>`).join('')}</ul>` : ''}
</body>
</html>
`
}

/** Writes the report directory (replacing an earlier one); returns the paths. */
export async function writeReport (dir: string, s: Summary): Promise<{ dir: string, html: string, json: string, svgs: string[] }> {
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const svgs = { versions: versionsSvg(s), clients: clientsSvg(s), timeline: timelineSvg(s), memory: memorySvg(s) }
  const json = join(dir, 'summary.json')
  await writeFile(json, JSON.stringify(s, null, 2) + '\n')
  const paths: string[] = []
  for (const [name, svg] of Object.entries(svgs)) {
    const p = join(dir, `${name}.svg`)
    await writeFile(p, svg)
    paths.push(p)
  }
  const html = join(dir, 'index.html')
  await writeFile(html, reportHtml(s, svgs))
  return { dir, html, json, svgs: paths }
}

/** The summary table printed at the end of a run. */
export function summaryTable (s: Summary): string[] {
  const b = s.bench
  const rows: Array<[string, string]> = [
    ['run', s.run.mode === 'control' ? `control (restarts), ${s.run.nodes} nodes` : `${s.run.from} → ${s.run.to} (system ${s.run.targetSystemVersion}), ${s.run.nodes} nodes, ${s.run.schedule ?? ''}`],
    ['faults', faultsText(s)],
    ...(s.rollout.partition != null ? [['partition', `${((s.rollout.partition.healMs ?? s.rollout.partition.atMs) - s.rollout.partition.atMs) / 1000} s; ${s.rollout.partition.keysWrittenOnBothSides} shared key(s) written on both sides`] as [string, string]] : []),
    ['propagation', b.propagation_ms != null ? `${b.propagation_ms} ms` : '–'],
    [s.run.mode === 'control' ? 'all nodes restarted' : 'all nodes upgraded', b.all_upgraded_ms != null ? `${b.all_upgraded_ms} ms` : '–'],
    ...(s.run.mode === 'control' ? [] : [['all members upgraded', s.rollout.membersUpgradedMs != null ? `${s.rollout.membersUpgradedMs} ms` : '–'] as [string, string]]),
    ['ops', `${b.ops} (ok ${s.ops.ok}, failed ${s.ops.failed}, refused ${s.ops.refused}, untyped ${s.ops.untyped}, retried ${s.ops.retried})`],
    ['ok ratio', `${(b.ok_ratio * 100).toFixed(3)} %`],
    ['latency steady', `p50 ${num(b.p50_steady_ms)} ms, p99 ${num(b.p99_steady_ms)} ms${sep(kinds(s.ops.steady))}`],
    ['latency rollout', `p50 ${num(b.p50_rollout_ms)} ms, p99 ${num(b.p99_rollout_ms)} ms${sep(kinds(s.ops.rollout))}`],
    ['latency after', `p50 ${num(b.p50_after_ms)} ms, p99 ${num(b.p99_after_ms)} ms${sep(kinds(s.ops.after))}`],
    ['lost writes', `${b.lost_writes} (${s.checks.checkedKeys} keys checked, ${s.checks.ackedPuts} puts and ${s.checks.ackedDeletes} deletes acknowledged)`],
    ['nodes at target', `${s.checks.nodesAtTarget}/${s.run.nodes}, clients ${s.checks.clientsAtTarget}/${s.run.clients}`],
    ['peak RSS per node', `p50 ${num(s.memory.rssMbP50)} MB, max ${num(s.memory.rssMbMax)} MB`],
    ['CPU', cpuText(s)],
    ['rolled back / halts', `${s.rollout.rolledBack} / ${s.rollout.halts}`],
    ['result', s.checks.passed ? 'PASS' : `FAIL: ${s.checks.failures.join('; ')}`]
  ]
  const width = Math.max(...rows.map(r => r[0].length))
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`)
}
