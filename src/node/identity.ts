import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { Key, type Datastore } from 'interface-datastore'
import type { PrivateKey } from '@libp2p/interface'

const IDENTITY_KEY = new Key('/identity')

/**
 * Loads the node's private key from its store, making and storing one on first start, so a node
 * restarted from its data directory keeps its peer id.
 */
export async function loadIdentity (datastore: Datastore): Promise<PrivateKey> {
  if (await datastore.has(IDENTITY_KEY)) {
    return privateKeyFromProtobuf(await datastore.get(IDENTITY_KEY))
  }
  const key = await generateKeyPair('Ed25519')
  await datastore.put(IDENTITY_KEY, privateKeyToProtobuf(key))
  return key
}
