/**
 * The programming model: what an app author writes. A class at a version is an ES module (the
 * entry of its bundle) whose exports molt calls; an upgrade to that version is more exports of the
 * same module. Everything here is plain data and functions, so a bundle needs no import of molt at
 * all: the host hands each function what it may use (decision 5: bundles are self-contained).
 *
 * Vocabulary (HotOS'03, ECOOP'06): a **class upgrade** takes nodes of an old class at version N-1
 * to a new class at version N. The new class's bundle exports its object factory and the
 * upgrade's **TF** (transform function), **past-SO** (implements version N-1 by calling the
 * version-N object) and **future-SO** (implements version N by calling the version N-1 object,
 * installed on nodes still at N-1). SOs chain: version N+2's future-SO calls version N+1's.
 *
 * @packageDocumentation
 */

/**
 * A value that crosses an RPC or goes into a store: what dag-cbor encodes. `undefined` is not a
 * value (it travels as `null`); numbers must be finite.
 */
export type Value =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | Value[]
  | { [key: string]: Value }

/**
 * A key-value store an object keeps its persistent state in: one namespace per (class, version),
 * and one per SO. Keys are `/`-separated paths of `[A-Za-z0-9._-]` segments.
 */
export interface AppStore {
  /** the value under a key, `undefined` when none */
  get(key: string): Promise<Value | undefined>
  /** stores a value under a key */
  put(key: string, value: Value): Promise<void>
  /** removes a key (no error when absent) */
  delete(key: string): Promise<void>
  /** every entry whose key starts with `prefix`, in key order */
  entries(prefix?: string): AsyncIterable<[string, Value]>
}

/**
 * A store that may only be read: what a TF gets of the old version's state and of the future-SO's.
 */
export type ReadonlyAppStore = Pick<AppStore, 'get' | 'entries'>

/**
 * A timer owned by the host: stopped when the object quiesces or its worker ends, so no app
 * timer outlives its version.
 */
export interface HostTimers {
  /** runs `fn` once after `ms` */
  setTimeout(fn: () => void, ms: number): number
  /** runs `fn` every `ms` */
  setInterval(fn: () => void, ms: number): number
  /** cancels a timer */
  clear(id: number): void
}

/**
 * Options of an outgoing call.
 */
export interface OutgoingCallOptions {
  /**
   * Deadline of the whole call, retries included, in milliseconds.
   *
   * @default 10000
   */
  deadlineMs?: number
  /**
   * Peers to try, in order, when the first fails with a retryable error (`UpgradingError`,
   * `UnavailableError`, `CallTimeoutError`).
   *
   * @default []
   */
  alternatives?: string[]
  /** which of the callee's objects, when a node serves several */
  object?: string
}

/**
 * What the host gives an object: its only ways to reach the outside (decision 7).
 */
export interface HostApi {
  /** this node: its peer id, class and version (the version the object implements) */
  readonly self: { readonly peerId: string, readonly class: string, readonly version: number }
  /**
   * Calls a method on another node through the upgrade layer, labelled with this object's
   * version. No atomic section is held across it: other calls to this node may run meanwhile.
   */
  call(peer: string, method: string, args: Value[], options?: OutgoingCallOptions): Promise<Value>
  /** peer ids this node is connected to */
  peers(): string[]
  /** timers owned by the host */
  readonly timers: HostTimers
  /** the object's persistent store */
  readonly store: AppStore
  /** debug logging under `molt:app` */
  log(message: string, ...args: Value[]): void
}

/**
 * What a method learns of its call.
 */
export interface CallContext {
  /** the calling peer's id (this node's own for a local delegation) */
  readonly peer: string
  /** the caller's labels */
  readonly caller: { readonly version: number, readonly class: string }
  /** aborts at the call's deadline */
  readonly signal: AbortSignal
}

/**
 * A method callable over RPC. Throwing an `Error` whose `name` is `SimulationRefusedError`
 * refuses a call an SO cannot implement consistently; any other throw reaches the caller as
 * `RemoteError`.
 */
export type Method = (args: Value[], context: CallContext) => Value | undefined | Promise<Value | undefined>

/**
 * A health report: `ok: false` keeps a new version from taking traffic (it is rolled back) and,
 * gossiped in status records, lets schedules halt a rollout.
 */
export interface HealthReport {
  ok: boolean
  /** why not, for people */
  detail?: string
}

/**
 * The running object of a class at a version (or an SO: SOs are objects too).
 */
export interface AppObject {
  /** the methods other nodes may call, by name */
  readonly methods: Readonly<Record<string, Method>>
  /**
   * Reach an update point: finish or refuse in-flight work and stop starting new work, within
   * the signal's deadline. Host timers stop on their own. A quiesce that does not finish in time
   * postpones the upgrade (decision 9).
   */
  quiesce?(signal: AbortSignal): Promise<void> | void
  /** is this object healthy? Asked before a new version takes traffic, and periodically */
  health?(): Promise<HealthReport> | HealthReport
  /** release what the object holds before its worker ends */
  stop?(): Promise<void> | void
  /**
   * Read-only observers of the object's state, for scheduling functions (HotOS'03 §4: SFs read
   * a node through privileged observers). Each runs in an atomic section with the object's store
   * read only (a write fails `ReadOnlyStoreError`); the host's `observe(name, args)` calls them.
   */
  readonly observers?: Readonly<Record<string, Observer>>
}

/**
 * A read-only observer of an object's state, called by scheduling functions through the host.
 */
export type Observer = (args: Value[]) => Value | undefined | Promise<Value | undefined>

/**
 * Makes the object of a class at a version from its store (which a TF may just have written).
 */
export type CreateObject = (host: HostApi) => AppObject | Promise<AppObject>

/**
 * Another object on the same node that an SO simulates through: its methods run in the same
 * atomic section as the SO's (local delegation is re-entrant, decision 7).
 */
export interface Delegate {
  /** the version the delegate implements */
  readonly version: number
  /** calls one of the delegate's methods */
  call(method: string, args: Value[]): Promise<Value>
}

/**
 * What an SO factory gets: the object it calls (the next link of its chain), its own persisted
 * store (SOs must recover after a crash, HotOS'03 §5), and the host.
 */
export interface SimulationContext {
  readonly delegate: Delegate
  readonly store: AppStore
  readonly host: HostApi
  /**
   * Past-SOs only: the persisted state of the version this SO simulates, as that version left it
   * (read only; never written again after the TF read it). A past-SO initialises its own state
   * from it (HotOS'03 §7.2: calls that use I(N-1) reflect the calls made to the old object).
   */
  readonly old?: ReadonlyAppStore
}

/**
 * Makes a simulation object.
 */
export type CreateSimulationObject = (context: SimulationContext) => AppObject | Promise<AppObject>

/**
 * What a TF gets: the old version's state (never written again), the future-SO's persisted state,
 * a fresh store for the new version, and an injected clock and random source so that a re-run
 * yields the same state (decision 8).
 */
export interface TransformContext {
  readonly old: ReadonlyAppStore
  readonly futureState: ReadonlyAppStore
  readonly next: AppStore
  /** the upgrade's fixed clock, milliseconds since the epoch */
  now(): number
  /** a seeded random source in [0, 1) */
  random(): number
  /** aborts at the TF's deadline */
  readonly signal: AbortSignal
}

/**
 * A transform function: node-local, restartable. It may be run again on the same input after a
 * crash, and must then write the same state.
 */
export type TransformFunction = (context: TransformContext) => Promise<void> | void

/**
 * An invariant checked on the new version's state before it takes traffic; a failure (false or a
 * throw) rolls the upgrade back. The string is the reason.
 */
export type Invariant = (state: ReadonlyAppStore) => boolean | string | Promise<boolean | string>

/**
 * What the entry module of a class's bundle exports. `create` is required; the rest belong to the
 * upgrade that introduces this version of the class and are present only where it needs them.
 */
export interface ClassModule {
  /** the range of molt's app API this bundle needs, e.g. `^1` */
  readonly moltApi: string
  /** the object factory */
  readonly create: CreateObject
  /** TF from the previous version's state; without one, the new version starts empty */
  readonly transform?: TransformFunction
  /** reverse TF: the only way back after the new version was admitted (decision 8) */
  readonly reverseTransform?: TransformFunction
  /** implements the previous version by calling this one, on upgraded nodes */
  readonly pastSO?: CreateSimulationObject
  /** implements this version by calling the previous one, on nodes not yet upgraded */
  readonly futureSO?: CreateSimulationObject
  /** checked on the transformed state before admission */
  readonly invariants?: Readonly<Record<string, Invariant>>
}

/**
 * The app API version this molt offers bundles; a bundle whose `moltApi` range excludes it is
 * refused before any of its code runs.
 */
export const MOLT_APP_API = '1.0.0'
