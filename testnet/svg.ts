/**
 * Hand-written SVG plots for the report, in the style of `molt simulate --svg` (`plotSvg` in
 * src/schedule): white background, a title, axes with five ticks, a legend on the right. Each
 * plot is a standalone, well-formed XML document (it also embeds in HTML as it is).
 *
 * @packageDocumentation
 */

/** Escapes text for XML. */
export function esc (s: string): string {
  return s.replace(/[<>&"']/g, c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c] as string)
}

/** A line of a chart. */
export interface Series {
  label: string
  color: string
  /** [x, y] points; NaN y breaks the line */
  points: Array<[number, number]>
  dashed?: boolean
}

/** A vertical marker (publish, kill, partition...). */
export interface Marker {
  x: number
  label: string
  color: string
}

/** A shaded x-range (the partition). */
export interface Band {
  from: number
  to: number
  label: string
  color: string
}

/** One panel of a line chart. */
export interface Panel {
  yLabel: string
  series: Series[]
  yMax?: number
  yMin?: number
  /** formats a y tick */
  yTick?: (v: number) => string
  height?: number
}

/** What a line chart shows. */
export interface LineChart {
  title: string
  xLabel: string
  xMax: number
  panels: Panel[]
  markers?: Marker[]
  bands?: Band[]
}

const W = 900
const L = 70
const R = 190
const T = 40
const GAP = 40
const B = 50

const fmt = (v: number): string => Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1)

/** The x axis of both charts: `[0, xMax]` onto the plot area, values outside it clamped. */
function xAxis (xMax: number): { max: number, x: (v: number) => number } {
  const max = Math.max(xMax, 1e-3)
  return { max, x: v => L + (W - L - R) * Math.min(Math.max(v, 0), max) / max }
}

/** A document's first lines: the root element, a white background, the title. */
function header (height: number, fontSize: number, title: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif" font-size="${fontSize}">`,
    `<rect width="${W}" height="${height}" fill="white"/>`,
    `<text x="${L}" y="24" font-size="15">${esc(title)}</text>`
  ]
}

/** Five ticks under the x axis, the axis label at the bottom. */
function xTicks (out: string[], axis: { max: number, x: (v: number) => number }, y: number, height: number, label: string): void {
  for (let k = 0; k <= 4; k++) {
    const v = axis.max * k / 4
    out.push(`<text x="${axis.x(v).toFixed(1)}" y="${y}" text-anchor="middle">${fmt(v)}</text>`)
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${height - 12}" text-anchor="middle">${esc(label)}</text>`)
}

/** The markers' legend entries from `legendY` down; returns the next free y. */
function markerLegend (out: string[], markers: readonly Marker[], legendY: number): number {
  for (const m of markers) {
    out.push(`<rect x="${W - R + 12}" y="${legendY}" width="12" height="2" fill="${m.color}"/>`)
    out.push(`<text x="${W - R + 30}" y="${legendY + 6}">${esc(m.label)}</text>`)
    legendY += 16
  }
  return legendY
}

/** Renders a chart of one or more stacked panels sharing the x axis. */
export function lineChart (chart: LineChart): string {
  const heights = chart.panels.map(p => p.height ?? 260)
  const H = T + heights.reduce((a, b) => a + b, 0) + GAP * (chart.panels.length - 1) + B
  const axis = xAxis(chart.xMax)
  const x = axis.x
  const out = header(H, 12, chart.title)
  let top = T
  let legendY = T
  chart.panels.forEach((panel, i) => {
    const h = heights[i] as number
    const bottom = top + h
    const ys = panel.series.flatMap(s => s.points.map(p => p[1])).filter(Number.isFinite)
    const yMax = panel.yMax ?? Math.max(1, ...ys) * 1.05
    const yMin = panel.yMin ?? 0
    const y = (v: number): number => bottom - h * (Math.min(Math.max(v, yMin), yMax) - yMin) / Math.max(yMax - yMin, 1e-9)
    for (const band of chart.bands ?? []) {
      out.push(`<rect x="${x(band.from).toFixed(1)}" y="${top}" width="${Math.max(1, x(band.to) - x(band.from)).toFixed(1)}" height="${h}" fill="${band.color}" opacity="0.15"/>`)
    }
    out.push(`<line x1="${L}" y1="${bottom}" x2="${W - R}" y2="${bottom}" stroke="black"/>`)
    out.push(`<line x1="${L}" y1="${top}" x2="${L}" y2="${bottom}" stroke="black"/>`)
    for (let k = 0; k <= 4; k++) {
      const v = yMin + (yMax - yMin) * k / 4
      out.push(`<text x="${L - 6}" y="${y(v).toFixed(1)}" text-anchor="end" dominant-baseline="middle">${esc((panel.yTick ?? fmt)(v))}</text>`)
      out.push(`<line x1="${L}" y1="${y(v).toFixed(1)}" x2="${W - R}" y2="${y(v).toFixed(1)}" stroke="#eee"/>`)
    }
    const mid = (top + bottom) / 2
    out.push(`<text x="18" y="${mid}" text-anchor="middle" transform="rotate(-90 18 ${mid})">${esc(panel.yLabel)}</text>`)
    for (const m of chart.markers ?? []) {
      out.push(`<line x1="${x(m.x).toFixed(1)}" y1="${top}" x2="${x(m.x).toFixed(1)}" y2="${bottom}" stroke="${m.color}" stroke-dasharray="4 3"/>`)
    }
    for (const s of panel.series) {
      const runs: string[][] = [[]]
      for (const [px, py] of s.points) {
        if (!Number.isFinite(py)) { runs.push([]); continue }
        runs.at(-1)?.push(`${x(px).toFixed(1)},${y(py).toFixed(1)}`)
      }
      for (const run of runs.filter(r => r.length > 0)) {
        out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed === true ? ' stroke-dasharray="6 3"' : ''} points="${run.join(' ')}"/>`)
      }
      out.push(`<rect x="${W - R + 12}" y="${legendY}" width="12" height="12" fill="${s.color}"/>`)
      out.push(`<text x="${W - R + 30}" y="${legendY + 10}">${esc(s.label)}</text>`)
      legendY += 20
    }
    top = bottom + GAP
  })
  // the last panel's bottom edge
  xTicks(out, axis, top - GAP + 18, H, chart.xLabel)
  legendY = markerLegend(out, chart.markers ?? [], legendY)
  for (const b of chart.bands ?? []) {
    out.push(`<rect x="${W - R + 12}" y="${legendY}" width="12" height="12" fill="${b.color}" opacity="0.3"/>`)
    out.push(`<text x="${W - R + 30}" y="${legendY + 10}">${esc(b.label)}</text>`)
    legendY += 20
  }
  out.push('</svg>')
  return out.join('\n') + '\n'
}

/** A row of the timeline chart: segments of states over time. */
export interface TimelineRow {
  label: string
  segments: Array<{ from: number, to: number, state: string }>
  /** instant marks on the row */
  marks?: Array<{ at: number, label: string }>
}

/** Renders one row per member, each a bar of coloured states over time. */
export function timelineChart (title: string, xLabel: string, xMax: number, rows: TimelineRow[], colors: Record<string, string>, markers: Marker[] = []): string {
  const rowH = 16
  const H = T + rows.length * (rowH + 4) + B + 10
  const axis = xAxis(xMax)
  const x = axis.x
  const out = header(H, 11, title)
  rows.forEach((row, i) => {
    const y = T + i * (rowH + 4)
    out.push(`<text x="${L - 6}" y="${y + rowH / 2}" text-anchor="end" dominant-baseline="middle">${esc(row.label)}</text>`)
    for (const s of row.segments) {
      if (s.to <= s.from) continue
      out.push(`<rect x="${x(s.from).toFixed(1)}" y="${y}" width="${Math.max(0.5, x(s.to) - x(s.from)).toFixed(1)}" height="${rowH}" fill="${colors[s.state] ?? '#999'}"><title>${esc(`${row.label} ${s.state} ${(s.from / 1000).toFixed(2)}–${(s.to / 1000).toFixed(2)} s`)}</title></rect>`)
    }
    for (const m of row.marks ?? []) {
      out.push(`<text x="${x(m.at).toFixed(1)}" y="${y + rowH - 3}" text-anchor="middle" font-weight="bold">${esc(m.label)}</text>`)
    }
  })
  const bottom = T + rows.length * (rowH + 4)
  for (const m of markers) {
    out.push(`<line x1="${x(m.x).toFixed(1)}" y1="${T - 4}" x2="${x(m.x).toFixed(1)}" y2="${bottom}" stroke="${m.color}" stroke-dasharray="4 3"/>`)
  }
  out.push(`<line x1="${L}" y1="${bottom}" x2="${W - R}" y2="${bottom}" stroke="black"/>`)
  xTicks(out, axis, bottom + 16, H, xLabel)
  let legendY = T
  for (const [state, color] of Object.entries(colors)) {
    out.push(`<rect x="${W - R + 12}" y="${legendY}" width="12" height="12" fill="${color}"/>`)
    out.push(`<text x="${W - R + 30}" y="${legendY + 10}">${esc(state)}</text>`)
    legendY += 18
  }
  markerLegend(out, markers, legendY)
  out.push('</svg>')
  return out.join('\n') + '\n'
}
