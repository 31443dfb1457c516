/**
 * A testnet member in its own process, forked by the launcher with an IPC channel
 * (`serialization: 'advanced'`). It waits for its `start` message, runs the member, and serves
 * the launcher's requests until told to stop.
 *
 * No orphans: the process exits when the IPC channel closes — the launcher stopped, crashed or
 * was SIGKILLed — after a short, bounded attempt to stop its node cleanly. SIGINT is ignored
 * (Ctrl-C in a terminal reaches the whole process group; the launcher decides what stops).
 *
 * @packageDocumentation
 */
import { logger } from '@libp2p/logger'
import { startMember, type Member } from './member.ts'
import { wireError, type FromMember, type MemberChannel, type ToMember } from './ipc.ts'

const log = logger('molt:testnet:process')

/** How long a clean stop may take once the launcher is gone. */
const ORPHAN_STOP_MS = 1500

if (process.send == null) {
  process.stderr.write('testnet/node-process: must be forked by the testnet launcher (needs an IPC channel)\n')
  process.exit(2)
}

let member: Member | undefined
let exiting = false

/** Stops the member within `ms`, then exits. */
function exit (code: number, ms: number): void {
  if (exiting) return
  exiting = true
  const timer = setTimeout(() => { process.exit(code) }, ms)
  timer.unref()
  void (member?.stop() ?? Promise.resolve()).catch(() => {}).finally(() => { process.exit(code) })
}

process.on('disconnect', () => {
  log('the launcher is gone: exiting')
  exit(0, ORPHAN_STOP_MS)
})
process.on('SIGINT', () => {})
process.on('SIGTERM', () => { exit(143, ORPHAN_STOP_MS) })

const handlers: Array<(message: ToMember) => void> = []
const channel: MemberChannel = {
  send (message: FromMember) {
    if (process.connected) {
      process.send?.(message, undefined, {}, (err) => { if (err != null) log('ipc send failed - %e', err) })
    }
  },
  onMessage (handler) { handlers.push(handler) }
}

process.on('message', (raw) => {
  const message = raw as ToMember
  if (message.type === 'start') {
    if (member != null) return
    startMember(message.config, channel).then((m) => {
      member = m
      // `stop` answers first, then the process goes
      channel.onMessage((next) => {
        if (next.type === 'request' && next.request.op === 'stop') {
          void m.stop().finally(() => { setTimeout(() => { process.exit(0) }, 50) })
        }
      })
    }, (err: unknown) => {
      channel.send({ type: 'fatal', error: wireError(err) })
      process.stderr.write(`testnet member ${message.config.name}: ${(err as Error).stack ?? String(err)}\n`)
      setTimeout(() => { process.exit(1) }, 100)
    })
    return
  }
  for (const h of handlers) h(message)
})
