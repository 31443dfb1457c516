/**
 * The worker side of a custom scheduling function (`bundle:<export>`): imports the new class's
 * bundle, takes the named export, and answers each evaluation on a snapshot of the fleet view
 * under the vm watchdog. A bundle whose top level never returns, or an SF that escapes the
 * watchdog, blocks only this thread; the main thread ends it (src/schedule/custom.ts).
 *
 * Internal: started by `createBundleSchedule`, never imported by the package's users.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { evaluateSchedule } from './evaluate.ts'
import { seededRandom } from './random.ts'
import type { SfRequest, SfResponse, SfWorkerData } from './custom.ts'
import type { FleetView, PeerStatus, ScheduleFunction } from './types.ts'

const port = parentPort
if (port == null) {
  throw new Error('the molt schedule worker must run in a worker thread')
}
const data = workerData as SfWorkerData

function post (message: SfResponse): void {
  port!.postMessage(message)
}

let fn: ScheduleFunction | undefined
let random: ReturnType<typeof seededRandom> | undefined

async function load (): Promise<void> {
  const mod = await import(data.url) as Record<string, unknown>
  const exported = mod[data.exportName]
  if (typeof exported !== 'function') {
    throw Object.assign(new Error(`the bundle exports no function "${data.exportName}"`), { name: 'UnknownScheduleError' })
  }
  fn = exported as ScheduleFunction
}

function onRequest (request: SfRequest): void {
  if (fn == null) return
  random ??= seededRandom(request.seed, request.input.self.peer)
  const records = new Map<string, PeerStatus>(request.input.records.map(r => [r.peer, r]))
  const contacts = request.input.contacts.map(p => records.get(p)).filter((r): r is PeerStatus => r != null)
  const view: FleetView = {
    get: (peer) => records.get(peer),
    contacts: () => contacts,
    control: request.input.control
  }
  const evaluation = evaluateSchedule(fn, {
    self: request.input.self,
    view,
    params: request.input.params,
    now: request.input.now,
    random
  }, { timeoutMs: request.timeoutMs })
  post({
    id: request.id,
    decision: evaluation.decision,
    ...(evaluation.error != null ? { error: { name: evaluation.error.name, message: evaluation.error.message } } : {})
  })
}

port.on('message', (message: SfRequest) => { onRequest(message) })
load().then(() => { post({ ready: true }) }, (err: Error) => {
  post({ failed: { name: err?.name === 'UnknownScheduleError' ? err.name : 'AppLoadError', message: `${err?.name ?? 'Error'}: ${err?.message ?? String(err)}`.slice(0, 512) } })
})
