/**
 * Chord client v1, class `chord-client` (system version 0): `put([key, value])` → `{ stamp }`,
 * `get([key])` → `{ value, stamp } | null`, over the v1 wire.
 */
import { createClientObject } from './client.ts'
import { callV1 } from './wire-v1.ts'
import type { AppObject, HostApi } from './types.ts'

export const moltApi = '^1'

export async function create (host: HostApi): Promise<AppObject> {
  return createClientObject(host, { chord: 1, wire: callV1, deletes: false })
}
