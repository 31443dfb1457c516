/**
 * The testnet's pure parts: flag parsing, the lost-write check, the ring check, and the report's
 * files (from a synthetic summary) parsing as XML and showing the JSON's numbers.
 */
import { describe, it, expect } from 'vitest'
import { parseFaults, parseTestnetArgs } from '../../testnet/args.ts'
import { cpuCores } from '../../testnet/recorder.ts'
import { arcGroups, ringState, type NodeInfo } from '../../testnet/chord.ts'
import { TestnetUsageError } from '../../testnet/errors.ts'
import { clientsSvg, memorySvg, reportHtml, timelineSvg, versionsSvg } from '../../testnet/report.ts'
import { checkWrites } from '../../testnet/verify.ts'
import { classify, Workload } from '../../testnet/workload.ts'
import { parseXml, XmlError } from './xml.ts'
import type { Summary } from '../../testnet/summary.ts'
import type { OpSample, WorkloadRecord } from '../../testnet/ipc.ts'

describe('testnet flags', () => {
  it('defaults to 16 nodes, the default schedule, Chord v2', () => {
    const r = parseTestnetArgs([], '/x')
    expect(r.help).toBe(false)
    if (r.help) return
    expect(r.options).toMatchObject({ nodes: 16, schedule: 'one-replica-at-a-time', to: 2, control: false, inProcess: false, json: false, keep: false, ops: 10_000, dataDir: '/x/testnet-data', reportDir: '/x/testnet-report', timeoutMs: 900_000 })
  })

  it('gives a large in-process ring more time, unless told', () => {
    const big = parseTestnetArgs(['--in-process', '--nodes', '100'])
    const small = parseTestnetArgs(['--in-process', '--nodes', '30'])
    const told = parseTestnetArgs(['--in-process', '--nodes', '100', '--timeout', '60'])
    if (big.help || small.help || told.help) throw new Error('not help')
    expect([big.options.timeoutMs, small.options.timeoutMs, told.options.timeoutMs]).toEqual([2_000_000, 900_000, 60_000])
  })

  it('parses every flag', () => {
    const r = parseTestnetArgs(['--nodes', '6', '--schedule', 'eager', '--to', 'v2', '--faults', 'kill=3,partition', '--json', '--keep', '--seed', '7', '--param', 'rate=0.5', '--param', 'then=eager'])
    if (r.help) throw new Error('help')
    expect(r.options).toMatchObject({ nodes: 6, schedule: 'eager', to: 2, faults: { kill: 3, partition: true }, json: true, keep: true, seed: 7, params: { rate: 0.5, then: 'eager' } })
    expect(parseTestnetArgs(['--help']).help).toBe(true)
  })

  it.each([
    [['--bogus'], /unknown option --bogus/],
    [['--nodes'], /needs a value|argument missing/],
    [['--nodes', 'x'], /--nodes: expected a whole number/],
    [['--nodes', '1'], /--nodes: expected a number from 2/],
    [['--schedule', 'fastest'], /not a built-in schedule/],
    [['--to', '9'], /--to/],
    [['--faults', 'kill=0'], /--faults kill/],
    [['--faults', 'flood'], /unknown fault/],
    [['--control', '--schedule', 'eager'], /--control publishes nothing/],
    [['--in-process', '--faults', 'kill=1'], /does not go with --in-process/],
    [['extra'], /unexpected argument/]
  ])('refuses %j', (argv, message) => {
    expect(() => parseTestnetArgs(argv)).toThrow(TestnetUsageError)
    expect(() => parseTestnetArgs(argv)).toThrow(message)
  })

  it('kill=K is below the node count', () => {
    expect(parseFaults('kill=3', 16)).toEqual({ kill: 3, partition: false })
    expect(() => parseFaults('kill=16', 16)).toThrow(TestnetUsageError)
  })
})

describe('failure kinds', () => {
  it('classifies the layer\'s failures', () => {
    expect(classify('UpgradingError')).toBe('retryable')
    expect(classify('UnavailableError')).toBe('retryable')
    expect(classify('CallTimeoutError')).toBe('retryable')
    expect(classify('SimulationRefusedError')).toBe('refused')
    expect(classify('VersionRetiredError')).toBe('refused')
    expect(classify('HostTimeoutError')).toBe('retryable')
    expect(classify('TypeError')).toBe('untyped')
  })

  it('a call that outlives its deadline by the grace second fails as a timeout, not untyped', async () => {
    // a layer whose own deadline never fires (its event loop too late): only the signal ends the call
    const call = async (_method: string, _args: unknown[], options: { signal: AbortSignal }): Promise<unknown> =>
      await new Promise((_resolve, reject) => { options.signal.addEventListener('abort', () => { reject(options.signal.reason) }, { once: true }) })
    const ops: OpSample[] = []
    const workload = new Workload('c', call, () => 1, (batch) => { ops.push(...batch) })
    workload.start({ keys: ['k'], shared: [], lanes: 1, ratePerLane: 1, deadlineMs: 200, deleteFromVersion: 2, seed: 1 })
    const deadline = Date.now() + 10_000
    while (ops.length === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    await workload.stop()
    expect(ops[0]).toMatchObject({ outcome: 'failed', error: 'CallTimeoutError' })
  })
})

describe('the lost-write check', () => {
  const rec = (client: string, writes: WorkloadRecord['writes']): WorkloadRecord => ({ client, writes })
  const put = (key: string, value: string, t: number, w = 'A', status: 'acked' | 'uncertain' = 'acked') => ({ key, kind: 'put' as const, value, ...(status === 'acked' ? { stamp: [t, w] as [number, string] } : {}), status, start: t, end: t })
  const del = (key: string, t: number, w = 'A', status: 'acked' | 'uncertain' = 'acked') => ({ key, kind: 'delete' as const, ...(status === 'acked' ? { stamp: [t, w] as [number, string] } : {}), status, start: t, end: t })

  it('passes the last acknowledged put and a kept delete', () => {
    const r = checkWrites([rec('c0', [put('a', 'x1', 1), put('a', 'x2', 2), put('b', 'y1', 1), del('b', 3)])], [
      { key: 'a', ok: true, value: 'x2', stamp: [2, 'A'] },
      { key: 'b', ok: true, value: null, stamp: null }
    ])
    expect(r).toMatchObject({ checked: 2, ackedPuts: 3, ackedDeletes: 1, lost: [] })
  })

  it('flags an older value, a vanished put and a resurrected key', () => {
    const r = checkWrites([rec('c0', [put('a', 'x1', 1), put('a', 'x2', 2), put('b', 'y1', 1), put('c', 'z1', 1), del('c', 2)])], [
      { key: 'a', ok: true, value: 'x1', stamp: [1, 'A'] },
      { key: 'b', ok: true, value: null, stamp: null },
      { key: 'c', ok: true, value: 'z1', stamp: [1, 'A'] }
    ])
    expect(r.lost.map(l => [l.key, l.reason])).toEqual([
      ['a', 'an acknowledged put was replaced by an older value'],
      ['b', 'an acknowledged put is gone'],
      ['c', 'an acknowledged delete came back']
    ])
  })

  it('accepts a newer unacknowledged write, never an older one', () => {
    const r = checkWrites([rec('c0', [put('a', 'x1', 1), put('a', 'x2', 0, 'A', 'uncertain')])], [{ key: 'a', ok: true, value: 'x2', stamp: [5, 'A'] }])
    expect(r).toMatchObject({ newerUnacked: 1, lost: [] })
    const older = checkWrites([rec('c0', [put('a', 'x1', 3), put('a', 'x2', 0, 'A', 'uncertain')])], [{ key: 'a', ok: true, value: 'x2', stamp: [2, 'A'] }])
    expect(older.lost).toHaveLength(1)
  })

  it('shared keys: last writer wins by [t, writer] across clients', () => {
    const records = [rec('c0', [put('s', 'from-a', 10, 'A')]), rec('c1', [put('s', 'from-b', 10, 'B')])]
    expect(checkWrites(records, [{ key: 's', ok: true, value: 'from-b', stamp: [10, 'B'] }]).lost).toEqual([])
    expect(checkWrites(records, [{ key: 's', ok: true, value: 'from-a', stamp: [10, 'A'] }]).lost).toHaveLength(1)
  })

  it('a key that cannot be read is not counted as checked-and-fine', () => {
    const r = checkWrites([rec('c0', [put('a', 'x1', 1)])], [{ key: 'a', ok: false, error: 'UnavailableError' }])
    expect(r.unreadable).toBe(1)
  })
})

describe('the ring check', () => {
  const node = (name: string, id: string, succ: string, pred: string): NodeInfo => ({ name, peerId: `P${name}`, info: { class: 'chord-node', id, succs: [`P${succ}`], pred: `P${pred}`, keys: 2 } })

  it('a stable ring climbs the ids once and wraps', () => {
    const r = ringState([node('a', '0a', 'b', 'c'), node('b', '0b', 'c', 'a'), node('c', '0c', 'a', 'b')])
    expect(r).toMatchObject({ stable: true, order: ['a', 'b', 'c'] })
  })

  it('two rings, a wrong order or a stale predecessor are not stable', () => {
    expect(ringState([node('a', '0a', 'b', 'b'), node('b', '0b', 'a', 'a'), node('c', '0c', 'c', 'c')]).stable).toBe(false)
    expect(ringState([node('a', '0a', 'c', 'b'), node('b', '0b', 'a', 'c'), node('c', '0c', 'b', 'a')]).stable).toBe(false)
    expect(ringState([node('a', '0a', 'b', 'b'), node('b', '0b', 'c', 'a'), node('c', '0c', 'a', 'b')]).stable).toBe(false)
  })

  it('reads the v1 wire too (successors, predecessor)', () => {
    const v1 = (name: string, id: string, succ: string, pred: string): NodeInfo => ({ name, peerId: `P${name}`, info: { id, successors: [`P${succ}`], predecessor: `P${pred}` } })
    expect(ringState([v1('a', '0a', 'b', 'b'), v1('b', '0b', 'a', 'a')]).stable).toBe(true)
  })

  it('arcs of consecutive nodes, a short last arc joins the previous one', () => {
    expect(arcGroups(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'], 4)).toEqual([['a', 'b', 'c', 'd'], ['e', 'f', 'g', 'h', 'i']])
    expect(arcGroups(['a', 'b', 'c', 'd', 'e', 'f'], 4)).toEqual([['a', 'b', 'c', 'd'], ['e', 'f']])
  })
})

describe('the XML checker the report tests rely on', () => {
  it('reads a well-formed document: root, element counts, attributes, decoded text', () => {
    const doc = parseXml('<?xml version="1.0"?><!-- c --><a x="1&amp;2"><b/><b y=\'z\'>t &lt;&#38;&#x3e;</b><style>p < q & r</style></a>')
    expect(doc).toMatchObject({ root: 'a', text: 't <&>', attributes: [{ element: 'a', attributes: { x: '1&2' } }, { element: 'b', attributes: {} }, { element: 'b', attributes: { y: 'z' } }, { element: 'style', attributes: {} }] })
    expect(doc.elements.get('b')).toBe(2)
  })

  it.each([
    ['<a>x & y</a>', /bare "&"/],
    ['<a>x < y</a>', /bad element name/],
    ['<a><b></a></b>', /closes <b>/],
    ['<a x=1></a>', /bad attribute/],
    ['<a x="1" x="2"></a>', /duplicate attribute/],
    ['<a></a><b></b>', /second root/],
    ['<a><b></a>', /closes <b>/],
    ['<a>', /unclosed <a>/],
    ['text', /outside the root/]
  ])('refuses %j', (text, message) => {
    expect(() => parseXml(text)).toThrow(XmlError)
    expect(() => parseXml(text)).toThrow(message)
  })
})

describe('CPU per window', () => {
  it('sums the processes, prorates at the edges, and skips a restart\'s first sample', () => {
    // one process busy 1 core from 0 to 2000; another at 0.5 core, killed at 1000 and restarted
    const a: Array<[number, number]> = [[0, 100], [1000, 1100], [2000, 2100]]
    const b: Array<[number, number]> = [[0, 50], [1000, 550], [1500, 300], [2000, 550]]
    expect(cpuCores([a, b], 0, 2000)).toBeCloseTo((2000 + 500 + 250) / 2000)
    expect(cpuCores([a], 500, 1500)).toBeCloseTo(1)
    expect(cpuCores([b], 250, 1000)).toBeCloseTo(0.5)
    expect(cpuCores([a, b], 3000, 4000)).toBeNaN()
  })
})

describe('the report', () => {
  const summary = (): Summary => ({
    bench: { bench: 'testnet', nodes: 2, propagation_ms: 120, all_upgraded_ms: 3400, ops: 90, ok_ratio: 0.98889, lost_writes: 0, p50_steady_ms: 2.5, p50_rollout_ms: 3, p99_steady_ms: 9, p99_rollout_ms: 20, p50_after_ms: 4, p99_after_ms: 15, rss_mb_p50: 120.5, mode: 'rollout' },
    run: { mode: 'rollout', inProcess: false, nodes: 2, clients: 1, schedule: 'eager', params: { note: '<&>' }, from: 'v1', to: 'v2', targetSystemVersion: 1, faults: { kill: 1, partition: true }, seed: 1, startedAt: new Date(0).toISOString(), durationMs: 20_000, dataDir: '/tmp/x' },
    checks: { passed: false, failures: ['ok ratio 98.889 % is below 99.9 % <&>'], lostWrites: 0, unreadableKeys: 0, checkedKeys: 5, ackedPuts: 40, ackedDeletes: 3, newerUnacked: 0, nodesAtTarget: 2, clientsAtTarget: 1, untypedFailures: 0, okRatio: 0.98889, minOkRatio: 0.999 },
    ops: { total: 90, ok: 89, failed: 1, refused: 0, untyped: 0, byKind: {}, failuresByName: { UnavailableError: 1 }, retried: 3, steady: { from: 0, to: 1, ops: 10, p50: 2.5, p99: 9, byKind: { put: { ops: 6, p50: 3.5, p99: 9 }, get: { ops: 4, p50: 1.5, p99: 2 } } }, rollout: { from: 1, to: 2, ops: 20, p50: 3, p99: 20, byKind: { put: { ops: 20, p50: 3, p99: 20 } } }, after: { from: 2, to: 3, ops: 5, p50: null, p99: null, byKind: {} } },
    rollout: { publishes: [{ version: 1, atMs: 5000, through: 'n01', cid: 'bafy' }], propagationMs: 120, nodesUpgradedMs: 3400, membersUpgradedMs: 4000, rolledBack: 0, postponed: 0, scheduleErrors: 0, halts: 0, kills: [{ name: 'n00', atMs: 6000, restartedMs: 8000 }], restarts: [], partition: { atMs: 6000, healMs: 9000, sides: { a: ['n00'], b: ['n01'] }, sharedWrites: { a: 3, b: 4 }, keysWrittenOnBothSides: 2 } },
    memory: { rssMbP50: 120.5, rssMbMax: 130, clientRssMbMax: 110, launcherPeakRssMb: 200 },
    cpu: { nodes: { steady: 0.81, rollout: 1.52, after: null }, clients: { steady: 0.2, rollout: 0.25, after: null }, machine: { steady: 1.1, rollout: 1.9, after: null }, machineCores: 2 },
    members: [
      { name: 'n00', role: 'node', peerId: 'P0', dataDir: null, version: 1, chord: 'v2', alive: true, manifestMs: 50, upgradedMs: 3000, peakRssMb: 120, rss: [[100, 100]], killed: 1, timeline: [{ at: 100, what: 'started' }, { at: 5100, what: 'manifest@1' }, { at: 5200, what: 'accepted@1' }, { at: 6000, what: 'killed' }, { at: 8000, what: 'restarted' }, { at: 8200, what: 'quiescing@1' }, { at: 8400, what: 'admitted@1' }] },
      { name: 'c0', role: 'client', peerId: 'P1', dataDir: null, version: 1, chord: 'v2', alive: true, manifestMs: 60, upgradedMs: 4000, peakRssMb: 110, rss: [], killed: 0, timeline: [{ at: 100, what: 'started' }, { at: 9000, what: 'quiescing@1' }, { at: 9100, what: 'completed@1' }] }
    ],
    series: {
      start: 0,
      publishMs: 5000,
      samples: [{ t: 0, nodes: { 0: 2 }, clients: { 0: 1 }, upgrading: 0, halted: 0 }, { t: 9000, nodes: { 1: 2 }, clients: { 1: 1 }, upgrading: 0, halted: 0 }],
      buckets: [{ t: 1000, ok: 10, failed: 1, refused: 0, untyped: 0, p50: 2, p99: 8 }, { t: 2000, ok: 0, failed: 0, refused: 0, untyped: 0, p50: Number.NaN, p99: Number.NaN }]
    },
    lost: [],
    notes: ['a note with <markup> & "quotes"']
  })

  it('every SVG and the HTML parse as XML, and the HTML shows the bench numbers', () => {
    const s = summary()
    const svgs = { versions: versionsSvg(s), clients: clientsSvg(s), timeline: timelineSvg(s), memory: memorySvg(s) }
    for (const svg of Object.values(svgs)) expect(parseXml(svg).root).toBe('svg')
    const html = reportHtml(s, svgs)
    const doc = parseXml(html)
    expect(doc.root).toBe('html')
    expect(doc.elements.get('svg')).toBe(4)
    const cells = Object.fromEntries(doc.attributes.filter(a => a.element === 'td' && a.attributes['data-key'] != null).map(a => [a.attributes['data-key'], true]))
    for (const [key, value] of Object.entries(s.bench)) {
      expect(cells[key], key).toBe(true)
      expect(html).toContain(`data-key="${key}">${String(value)}</td>`)
    }
    expect(doc.text).toContain('a note with <markup> & "quotes"')
    // the windows' latencies per kind of op, as the JSON has them
    expect(doc.text).toContain('10 ops, p50 2.5 ms, p99 9 ms; put 3.5/9 get 1.5/2 ms')
    expect(html).toContain('>5 ops, p50 – ms, p99 – ms</td>')
    expect(doc.text).toContain('nodes steady 0.81, rollout 1.52, after –; clients 0.2, 0.25, –; machine 1.1, 1.9, – cores busy (of 2)')
  })
})
