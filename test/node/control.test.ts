import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { describe, it, expect, afterEach } from 'vitest'
import {
  BelowThresholdError, UnknownKeyError, createControl, signControl, type ControlAction, type SignedControl
} from '../../src/manifest/index.ts'
import { eventually } from '../helpers.ts'
import { buildChain, makeGenesis, makeKeys } from '../fixtures.ts'
import { startNetwork, startNode, stopAll } from '../nodes.ts'
import type { MoltNode } from '../../src/node/index.ts'
import type { PrivateKey } from '@libp2p/interface'

async function control (seq: number, action: ControlAction, signers: PrivateKey[], scope = 1): Promise<SignedControl> {
  let c = await createControl({ system: 'test', seq, scope, action, createdAt: 1_700_000_000_000 + seq })
  for (const k of signers) c = await signControl(c, k)
  return c
}

describe('control messages across real nodes', () => {
  const nodes: MoltNode[] = []
  const dirs: string[] = []
  afterEach(async () => {
    await stopAll(nodes)
    await Promise.all(dirs.splice(0).map(async d => { await rm(d, { recursive: true, force: true }) }))
  })

  it('pause, resume and abort reach all 12 nodes in order; a replayed resume changes nothing; a node offline during the abort learns it when it returns', async () => {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    const signers = keys.release.slice(0, 2)
    nodes.push(...await startNetwork(genesis, 12, 3))
    const [m1] = await buildChain(genesis, signers, 1)
    await nodes[0]!.publish(m1!)

    const dataDir = await mkdtemp(join(tmpdir(), 'molt-control-'))
    dirs.push(dataDir)
    let away = await startNode(genesis, { dataDir, bootstrap: nodes[4]!.libp2p.getMultiaddrs().map(String) })
    await eventually(() => away.head().body.version === 1, 'the soon-offline node at version 1')

    const pause = await control(1, { type: 'pause' }, signers)
    const resume = await control(2, { type: 'resume' }, signers)
    expect(await nodes[3]!.publishControl(pause)).toBe('accepted')
    await eventually(() => [...nodes, away].every(n => n.status().control.paused.includes(1)), 'every node paused')
    expect(await nodes[7]!.publishControl(resume)).toBe('accepted')
    await eventually(() => [...nodes, away].every(n => n.status().control.seq === 2 && n.status().control.paused.length === 0), 'every node resumed')

    await away.stop()
    expect(await nodes[9]!.publishControl(await control(3, { type: 'abort' }, signers))).toBe('accepted')
    await eventually(() => nodes.every(n => n.status().control.aborted.includes(1)), 'every online node aborted')

    // a replay of the older resume: the log only grows at highest + 1
    expect(await nodes[2]!.publishControl(resume)).toBe('old')
    for (const n of nodes) {
      expect(n.status().control).toMatchObject({ seq: 3, paused: [], aborted: [1] })
    }

    away = await startNode(genesis, { dataDir, bootstrap: nodes[11]!.libp2p.getMultiaddrs().map(String) })
    nodes.push(away)
    await eventually(() => away.status().control.aborted.includes(1), 'the returning node learns of the abort')
    expect(away.status().control.seq).toBe(3)
  })

  it('forged or unauthorised control messages are refused like forged manifests and change nothing', async () => {
    const keys = await makeKeys()
    const genesis = await makeGenesis(keys)
    nodes.push(...await startNetwork(genesis, 3, 2))
    const stranger = await generateKeyPair('Ed25519')
    await expect(nodes[0]!.publishControl(await control(1, { type: 'abort' }, [stranger]))).rejects.toThrow(UnknownKeyError)
    await expect(nodes[0]!.publishControl(await control(1, { type: 'abort' }, keys.release.slice(0, 1)))).rejects.toThrow(BelowThresholdError)
    const once = await control(1, { type: 'abort' }, keys.release.slice(0, 1))
    await expect(nodes[0]!.publishControl({ ...once, signatures: [once.signatures[0]!, once.signatures[0]!] })).rejects.toThrow(BelowThresholdError)
    // root keys are not release keys: they cannot order a rollout
    await expect(nodes[0]!.publishControl(await control(1, { type: 'abort' }, keys.root))).rejects.toThrow(BelowThresholdError)
    for (const n of nodes) {
      expect(n.status().control.seq).toBe(0)
    }
  })
})
