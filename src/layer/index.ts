/**
 * The upgrade layer: versioned RPC between nodes at different versions (decision 6). It labels
 * outgoing calls with the node's version and class, dispatches incoming calls to the current
 * object or the past-/future-SO chain of the call's version, answers `Upgrading` while the node
 * quiesces, and reports every label it sees so the fleet view and catch-up can use them.
 *
 * @packageDocumentation
 */
export * from './errors.ts'
export * from './wire.ts'
export * from './dispatch.ts'
export * from './layer.ts'
