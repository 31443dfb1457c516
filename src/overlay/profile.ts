import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { InvalidOptionError, PublicAddressRefusedError } from './errors.ts'

/**
 * How a node treats addresses.
 *
 * - `network`: real-network defaults. Gossipsub's IP-colocation penalty stays on, the DHT keeps
 *   only public addresses of peers, and the connection manager's rate limits apply.
 * - `local`: a testnet on one machine. Every peer shares 127.0.0.1, so the colocation penalty is
 *   off, the DHT keeps loopback and memory addresses, and loopback is on the connection
 *   allow-list; connections are not pinged for liveness (a dead peer's connections close by
 *   themselves on one machine). The profile refuses any address that is not loopback or memory.
 */
export type OverlayProfile = 'network' | 'local'

/** Multiaddr prefixes that the local profile accepts. */
const LOCAL_ALLOW = ['/ip4/127.0.0.0/ipcidr/8', '/ip6/::1/ipcidr/128']

/**
 * The connection-manager allow-list the local profile installs.
 */
export function localAllowList (): string[] {
  return [...LOCAL_ALLOW]
}

/**
 * True when the address is on loopback or the in-memory transport.
 */
export function isLocalAddress (ma: Multiaddr): boolean {
  const components = ma.getComponents()
  const first = components[0]
  if (first == null) {
    return false
  }
  if (first.name === 'memory') {
    return true
  }
  if (first.name === 'ip4') {
    return first.value?.startsWith('127.') === true
  }
  if (first.name === 'ip6') {
    return first.value === '::1'
  }
  if (first.name === 'dns' || first.name === 'dns4' || first.name === 'dns6') {
    return first.value === 'localhost'
  }
  return false
}

/**
 * Parses a multiaddr string, naming the option it came from when it is malformed.
 */
export function parseAddress (value: string, option: string): Multiaddr {
  try {
    return multiaddr(value)
  } catch (err) {
    throw new InvalidOptionError(`${option}: "${value}" is not a multiaddr (${(err as Error).message})`)
  }
}

/**
 * Throws `PublicAddressRefusedError` unless every address is local. The local profile's relaxations
 * would weaken a node on a real network, so it must never run there.
 */
export function assertLocalAddresses (addresses: Multiaddr[], option: string): void {
  for (const ma of addresses) {
    if (!isLocalAddress(ma)) {
      throw new PublicAddressRefusedError(`${option}: the local profile only uses loopback or memory addresses, not ${ma.toString()}`)
    }
  }
}
