/**
 * @file The concrete, immutable `Array` (a device buffer plus its aval), devices, and host conversion.
 * Arrays are reference counted by the library; users may release one early with `dispose()` or
 * `using`, or release everything created in a block with `scope()` (see memory.ts). Reads are async
 * (`await x.data()`); CPU arrays also read synchronously (`x.dataSync()`).
 */
import { DType, Shape, ShapedArray, shapeSize, shapeStr } from "../autodiff/aval.js";
import { BackendError, DTypeError, ShapeError } from "../autodiff/errors.js";
import { hooks, Tracer, Value } from "../autodiff/core.js";
import type { AnyTypedArray, Backend } from "./backend/kernel.js";
import { castScalar, checkDType, dtypeIndex, dtypeOfTypedArray, newTypedArray } from "./dtype.js";

/** A place arrays live: the CPU, or a WebGPU adapter. */
export interface Device {
  /** `cpu`, `webgpu:0`, ... */
  readonly id: string;
  readonly kind: "cpu" | "webgpu";
  /** Adapter / machine description. */
  readonly description: string;
  readonly backend: Backend<unknown>;
  /** float64 support (CPU only). */
  readonly supportsFloat64: boolean;
}

const deviceList: Device[] = [];
let defaultDevice: Device | null = null;

export function registerDevice(d: Device): void {
  if (!deviceList.some((x) => x.id === d.id)) deviceList.push(d);
  if (!defaultDevice) defaultDevice = d;
}

export function unregisterDevice(id: string): void {
  const i = deviceList.findIndex((d) => d.id === id);
  if (i >= 0) deviceList.splice(i, 1);
  if (defaultDevice?.id === id) defaultDevice = deviceList[0] ?? null;
}

export function listDevices(): readonly Device[] {
  return deviceList;
}

export function getDefaultDevice(): Device {
  if (!defaultDevice) throw new BackendError("devices: no device is registered (the CPU backend failed to load)");
  return defaultDevice;
}

export function setDefaultDevice(d: Device | string): void {
  const dev = typeof d === "string" ? deviceList.find((x) => x.id === d || x.kind === d) : d;
  if (!dev) {
    throw new BackendError(`setDefaultDevice: no device ${JSON.stringify(d)}; available: ${deviceList.map((x) => x.id).join(", ")}`);
  }
  defaultDevice = dev;
}

// ---------------------------------------------------------------------------------------------------
// Live-buffer accounting

interface DeviceStats {
  liveArrays: number;
  liveBytes: number;
}
const stats = new Map<string, DeviceStats>();
function statsFor(id: string): DeviceStats {
  let s = stats.get(id);
  if (!s) stats.set(id, (s = { liveArrays: 0, liveBytes: 0 }));
  return s;
}
// One-entry cache in front of `stats`: nearly every array lives on the default device.
let lastStatsDevice: Device | null = null;
let lastStats: DeviceStats | null = null;
function statsOf(device: Device): DeviceStats {
  if (device === lastStatsDevice) return lastStats!;
  lastStats = statsFor(device.id);
  lastStatsDevice = device;
  return lastStats;
}

/**
 * What the safety net needs to account for an array that was garbage-collected without dispose():
 * its device's counters, its size, and (only where the backend's memory is not JS-heap memory, i.e.
 * not on the CPU) the buffer to release. `released` is set by dispose(), so a disposed array is never
 * counted twice.
 */
interface Tracked {
  readonly stats: DeviceStats;
  readonly backend: Backend<unknown>;
  /** Dropped (null) once released, so a disposed array's record holds no backend object. */
  buffer: unknown;
  readonly bytes: number;
  released: boolean;
}

/**
 * Safety net: a buffer whose Array was garbage-collected without dispose() is released and uncounted.
 *
 * Performance (this is most of the cost of a small eager op): V8's young-generation GC treats the
 * targets of weak cells as strong, so an Array registered here would be promoted to the old generation
 * together with everything it references (buffer, typed array, aval) and could only die in a full
 * mark-compact; registering 300k eager intermediates meant hundreds of MB of old space. So the
 * registered target is a tiny sentinel object that only its Array references (it dies exactly when the
 * Array does, and is all that gets promoted), the holdings never reference CPU storage (JS-heap memory
 * that the GC reclaims by itself; releasing an unreachable CPU buffer would be a no-op), and there is
 * no unregister token (V8 keeps tokens in a hash table; `released` makes unregistering unnecessary).
 * Arrays owned by a `scope()` are not registered at all unless they escape it (memory.ts): the scope
 * disposes them deterministically. Measured with bench/eager-overhead.ts (2 shared cores, load ~2),
 * together with the other eager-path changes: np.add(y, one) on f32[] 2.4 -> 0.85 µs per op, the GC's
 * share of the time 45% -> 13%; 300k np.add(y, 1) in one synchronous loop 3.8 -> 1.05 µs per op.
 */
const finalizer = new FinalizationRegistry<Tracked>((t) => {
  if (t.released) return;
  t.released = true;
  if (t.buffer !== null) t.backend.release(t.buffer);
  t.stats.liveArrays--;
  t.stats.liveBytes -= t.bytes;
});

/**
 * Hook so scopes can take ownership of arrays created while they are open (memory.ts). An owned array
 * is not registered with the safety net; its owner either disposes it or calls `_track()` when it
 * escapes.
 */
let onCreate: ((a: Array) => void) | null = null;
export function setArrayCreateHook(h: ((a: Array) => void) | null): void {
  onCreate = h;
}

/** Sinks of the open temporaries windows (innermost last); see beginTemporaries. */
const tempSinks: Array[][] = [];
function toTempSink(a: Array): void {
  tempSinks[tempSinks.length - 1]!.push(a);
}

/**
 * Internal (np.ts): from now until `endTemporaries(prev)`, arrays created go to `sink` instead of to a
 * scope or the GC safety net, and the caller must dispose every one of them. For intermediates that
 * eager code creates and uses at once (a JS number broadcast to an operand's shape); only where
 * `isEagerContext()` holds, since under a transform a concrete intermediate may be kept as a residual.
 * Returns the hook to restore.
 */
export function beginTemporaries(sink: Array[]): ((a: Array) => void) | null {
  const prev = onCreate;
  tempSinks.push(sink);
  onCreate = toTempSink;
  return prev;
}

/** Closes the innermost temporaries window (see beginTemporaries). */
export function endTemporaries(prev: ((a: Array) => void) | null): void {
  tempSinks.pop();
  onCreate = prev;
}

export type NestedArray = number | boolean | NestedArray[];

/** An immutable n-dimensional array on a device. */
export class Array {
  private _released = false;
  private readonly _bytes: number;
  private readonly _stats: DeviceStats;
  /** The safety-net record once registered (see `finalizer`), else null. */
  private _tracked: Tracked | null = null;
  /** The weak target registered for this array: referenced only from here (see `finalizer`). */
  private _sentinel: object | null = null;
  /** Internal (memory.ts): the open scope that owns this array, if any. */
  _scope: object | null = null;
  constructor(
    readonly aval: ShapedArray,
    readonly device: Device,
    private _buffer: unknown,
  ) {
    this._bytes = device.backend.bytesOf(_buffer);
    const s = (this._stats = statsOf(device));
    s.liveArrays++;
    s.liveBytes += this._bytes;
    if (onCreate !== null) onCreate(this);
    else this._track();
  }
  /**
   * Registers the array with the garbage-collection safety net (idempotent). Called at creation, or by
   * a scope when an array it owned escapes it (memory.ts).
   */
  _track(): void {
    if (this._tracked !== null || this._released || this._permanent) return;
    const device = this.device;
    this._tracked = {
      stats: this._stats,
      backend: device.backend,
      buffer: device.kind === "cpu" ? null : this._buffer,
      bytes: this._bytes,
      released: false,
    };
    this._sentinel = {};
    finalizer.register(this._sentinel, this._tracked);
  }
  get shape(): Shape {
    return this.aval.shape;
  }
  get dtype(): DType {
    return this.aval.dtype;
  }
  get ndim(): number {
    return this.aval.ndim;
  }
  get size(): number {
    return this.aval.size;
  }
  get weakType(): boolean {
    return this.aval.weakType;
  }
  get isDisposed(): boolean {
    return this._released;
  }
  /** The backend buffer; throws if the array was disposed or donated. */
  get buffer(): unknown {
    if (this._released) {
      throw new BackendError(
        `Array ${this.aval.str()}: used after dispose() (or after being donated to a jit call)` +
          `\nTip: keep the array alive, or use the value the call returned`,
      );
    }
    return this._buffer;
  }
  /**
   * Whether the array was placed on its device on purpose (an explicit `device`, devicePut, or computed
   * from committed arrays). Uncommitted arrays (JS numbers, np.array without a device) follow committed
   * ones to their device, as in JAX.
   */
  committed = false;
  private _copies: Map<string, Array> | undefined;
  /** A copy on `dev` (cached while this array lives); only from devices with synchronous reads. */
  copyTo(dev: Device, what: string): Array {
    const hit = this._copies?.get(dev.id);
    if (hit && !hit.isDisposed) return hit;
    const read = this.device.backend.readSync;
    if (!read) {
      throw new BackendError(
        `${what}: an array on ${this.device.id} cannot follow the other arguments to ${dev.id} synchronously` +
          `\nTip: create it on ${dev.id} (np.array(data, { device: "${dev.id}" })) or use await devicePut(x, "${dev.id}")`,
      );
    }
    checkDeviceDType(dev, this.dtype, what);
    const copy = wrapBuffer(dev.backend.fromHost(read.call(this.device.backend, this.buffer), this.aval), this.aval, dev);
    (this._copies ??= new Map()).set(dev.id, copy);
    return copy;
  }
  private _permanent = false;
  /** Marks a shared constant that dispose() must not release (cached scalars). */
  makePermanent(): void {
    this._permanent = true;
  }
  /** Whether this is a shared permanent constant (never released, never donated). */
  get permanent(): boolean {
    return this._permanent;
  }
  /** Releases the buffer now. Idempotent. Using the array afterwards throws. */
  dispose(): void {
    if (this._released || this._permanent) return;
    if (this._copies) for (const c of this._copies.values()) c.dispose();
    this._released = true;
    const t = this._tracked;
    if (t !== null) {
      // The safety net must not count it again; the sentinel can go with the record.
      t.released = true;
      t.buffer = null;
      this._tracked = null;
      this._sentinel = null;
    }
    this.device.backend.release(this._buffer);
    const s = this._stats;
    s.liveArrays--;
    s.liveBytes -= this._bytes;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  /** Flat contents in C order (a fresh typed array). */
  async data(): Promise<AnyTypedArray> {
    return this.device.backend.read(this.buffer);
  }
  /** Synchronous read; only on devices that allow it (CPU). */
  dataSync(): AnyTypedArray {
    const r = this.device.backend.readSync;
    if (!r) {
      throw new BackendError(
        `dataSync: ${this.device.id} arrays can only be read asynchronously\nTip: use await x.data() / x.toArray() / x.item()`,
      );
    }
    return r.call(this.device.backend, this.buffer);
  }
  async toArray(): Promise<NestedArray> {
    return toNested(await this.data(), this.shape, this.dtype);
  }
  toArraySync(): NestedArray {
    return toNested(this.dataSync(), this.shape, this.dtype);
  }
  async item(): Promise<number | boolean> {
    return itemOf(this, await this.data());
  }
  itemSync(): number | boolean {
    return itemOf(this, this.dataSync());
  }
  /** Scalars on synchronous devices convert to numbers (so `Number(x)` and `x > 0` work on CPU). */
  [Symbol.toPrimitive](hint: string): number | string {
    if (hint === "string") return this.toString();
    if (this.size !== 1 || !this.device.backend.readSync) {
      throw new ShapeError(
        `Array ${this.aval.str()}: only single-element CPU arrays convert to a JS number\nTip: use await x.item()`,
      );
    }
    return Number(this.itemSync());
  }
  /** Iterates over axis 0 (so `const [k1, k2] = random.split(key)` works). */
  [Symbol.iterator](): Iterator<Value> {
    return hooks().unstack(this)[Symbol.iterator]();
  }
  toString(): string {
    if (this.device.backend.readSync && this.size <= 1000) {
      return `Array(${formatNested(this.toArraySync())}, dtype=${this.dtype})`;
    }
    return `Array(shape=${shapeStr(this.shape)}, dtype=${this.dtype}, device=${this.device.id})`;
  }
}

/** Nested lists as text, keeping NaN and ±Infinity (which JSON would turn into null). */
function formatNested(x: NestedArray): string {
  return globalThis.Array.isArray(x) ? `[${x.map(formatNested).join(",")}]` : String(x);
}

function itemOf(a: Array, d: AnyTypedArray): number | boolean {
  if (a.size !== 1) throw new ShapeError(`item: needs an array of one element, got ${a.aval.str()}`);
  return a.dtype === "bool" ? d[0] !== 0 : Number(d[0]);
}

function toNested(d: AnyTypedArray, shape: Shape, dtype: DType): NestedArray {
  const conv = dtype === "bool" ? (v: number) => v !== 0 : (v: number) => v;
  if (shape.length === 0) return conv(d[0] as number);
  let pos = 0;
  const build = (k: number): NestedArray[] => {
    const out: NestedArray[] = [];
    for (let i = 0; i < shape[k]!; i++) {
      out.push(k === shape.length - 1 ? conv(d[pos++] as number) : build(k + 1));
    }
    return out;
  };
  return build(0);
}

/** Memory in use per device: live arrays and bytes. */
export function memoryStats(device?: Device | string): { liveArrays: number; liveBytes: number } {
  const id = device === undefined ? getDefaultDevice().id : typeof device === "string" ? device : device.id;
  const s = statsFor(id);
  return { liveArrays: s.liveArrays, liveBytes: s.liveBytes };
}

// ---------------------------------------------------------------------------------------------------
// Host -> device

/** Wraps a freshly computed backend buffer as an Array. */
export function wrapBuffer(buffer: unknown, aval: ShapedArray, device: Device): Array {
  return new Array(aval, device, buffer);
}

function inferShape(x: unknown, what: string): number[] {
  const shape: number[] = [];
  let cur: unknown = x;
  while (globalThis.Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0];
  }
  void what;
  return shape;
}

function fillFlat(x: unknown, shape: readonly number[], out: number[], depth: number, what: string): void {
  if (depth === shape.length) {
    if (typeof x === "number") out.push(x);
    else if (typeof x === "boolean") out.push(x ? 1 : 0);
    else if (x instanceof Array && x.size === 1) out.push(Number(x.itemSync()));
    else {
      throw new ShapeError(`${what}: nested lists must be rectangular and contain numbers or booleans, got ${describe(x)}`);
    }
    return;
  }
  if (!globalThis.Array.isArray(x) || x.length !== shape[depth]) {
    throw new ShapeError(
      `${what}: nested lists must be rectangular, expected length ${shape[depth]} at depth ${depth}, got ${describe(x)}`,
    );
  }
  for (const c of x) fillFlat(c, shape, out, depth + 1, what);
}

function describe(x: unknown): string {
  if (globalThis.Array.isArray(x)) return `a list of length ${x.length}`;
  if (x instanceof Tracer) return `a traced array ${x.aval.str()}`;
  return typeof x === "object" ? String(x) : `${typeof x} ${String(x)}`;
}

function isBoolData(x: unknown): boolean {
  let cur: unknown = x;
  while (globalThis.Array.isArray(cur)) {
    if (cur.length === 0) return false;
    cur = cur[0];
  }
  return typeof cur === "boolean";
}

export interface ArrayOptions {
  dtype?: DType;
  device?: Device | string;
}

export function resolveDevice(d: Device | string | undefined): Device {
  if (d === undefined) return getDefaultDevice();
  if (typeof d !== "string") return d;
  const dev = deviceList.find((x) => x.id === d || x.kind === d);
  if (!dev) throw new BackendError(`device ${JSON.stringify(d)} not found; available: ${deviceList.map((x) => x.id).join(", ")}`);
  return dev;
}

export function checkDeviceDType(device: Device, dtype: DType, what: string): void {
  if (dtype === "float64" && !device.supportsFloat64) {
    throw new DTypeError(
      `${what}: float64 is not supported on ${device.id}\nTip: use float32, or run float64 gradient checks on the CPU backend`,
    );
  }
}

/** Builds an array from host data: a typed array (with `shape`), nested JS lists, a number or boolean. */
export function fromHost(
  data: AnyTypedArray | NestedArray,
  shape: Shape | undefined,
  opts: ArrayOptions & { weakType?: boolean } = {},
  what = "np.array",
): Array {
  const device = resolveDevice(opts.device);
  if (ArrayBuffer.isView(data)) {
    const td = data as AnyTypedArray;
    const dtype = opts.dtype ? checkDType(what, opts.dtype) : dtypeOfTypedArray(td);
    const shp = shape ?? [td.length];
    if (shapeSize(shp) !== td.length) {
      throw new ShapeError(`${what}: shape ${shapeStr(shp)} needs ${shapeSize(shp)} elements, got ${td.length}`);
    }
    checkDeviceDType(device, dtype, what);
    let buf: AnyTypedArray;
    if (dtypeOfTypedArray(td) === dtype) buf = td.slice() as AnyTypedArray;
    else {
      buf = newTypedArray(dtype, td.length);
      for (let i = 0; i < td.length; i++) buf[i] = castScalar(td[i]!, dtype);
    }
    const aval = new ShapedArray(shp, dtype, !!opts.weakType);
    const out = wrapBuffer(device.backend.fromHost(buf, aval), aval, device);
    out.committed = opts.device !== undefined;
    return out;
  }
  const inferred = inferShape(data, what);
  const dtype = opts.dtype ? checkDType(what, opts.dtype) : isBoolData(data) ? "bool" : "float32";
  const flat: number[] = [];
  fillFlat(data, inferred, flat, 0, what);
  const shp = shape ?? inferred;
  if (shapeSize(shp) !== flat.length) {
    throw new ShapeError(`${what}: shape ${shapeStr(shp)} needs ${shapeSize(shp)} elements, got ${flat.length}`);
  }
  checkDeviceDType(device, dtype, what);
  const buf = newTypedArray(dtype, flat.length);
  for (let i = 0; i < flat.length; i++) buf[i] = castScalar(flat[i]!, dtype);
  const aval = new ShapedArray(shp, dtype, !!opts.weakType);
  const out = wrapBuffer(device.backend.fromHost(buf, aval), aval, device);
  out.committed = opts.device !== undefined;
  return out;
}

/**
 * Scalars made from JS numbers recur constantly (1, 0.5, 2 in every derivative rule), so they are
 * cached per (device, dtype, weakness, value). Cached scalars are permanent: dispose() and scopes leave
 * them alone, which is safe because arrays are immutable.
 *
 * Layout (no string keys: this lookup runs for every JS number in an eager op): per device id, one
 * Map per (dtype, weakness) from the stored value to the array. Maps compare keys with SameValueZero,
 * which equates -0 and +0, so a stored -0 (kept apart: its sign matters) lives in `negZero`.
 */
interface ScalarSlot {
  readonly byValue: Map<number, Array>;
  negZero: Array | undefined;
}
const scalarCache = new Map<string, ScalarSlot[]>();
let scalarCacheSize = 0;
const SCALAR_CACHE_LIMIT = 4096;
// One-entry cache in front of `scalarCache` (the device object last asked for and its slots).
let lastScalarDevice: Device | null = null;
let lastScalarSlots: ScalarSlot[] | null = null;

function scalarSlots(dev: Device): ScalarSlot[] {
  if (dev === lastScalarDevice) return lastScalarSlots!;
  let slots = scalarCache.get(dev.id);
  if (!slots) {
    slots = [];
    for (let i = 0; i < 10; i++) slots.push({ byValue: new Map(), negZero: undefined });
    scalarCache.set(dev.id, slots);
  }
  lastScalarDevice = dev;
  lastScalarSlots = slots;
  return slots;
}

/** A scalar array from a JS number/boolean; weakly typed (it yields to the other operand's dtype). */
export function scalar(x: number | boolean, dtype: DType, weakType: boolean, device?: Device): Array {
  const dev = device ?? getDefaultDevice();
  const v = castScalar(x, dtype);
  const slot = scalarSlots(dev)[2 * dtypeIndex(dtype) + (weakType ? 1 : 0)]!;
  const negZero = v === 0 && 1 / v < 0;
  const hit = negZero ? slot.negZero : slot.byValue.get(v);
  if (hit !== undefined && !hit.isDisposed) return hit;
  const buf = newTypedArray(dtype, 1);
  buf[0] = v;
  const aval = new ShapedArray([], dtype, weakType);
  const hook = onCreate;
  onCreate = null; // not owned by any scope
  try {
    const a = wrapBuffer(dev.backend.fromHost(buf, aval), aval, dev);
    if (scalarCacheSize < SCALAR_CACHE_LIMIT) {
      if (hit === undefined) scalarCacheSize++;
      if (negZero) slot.negZero = a;
      else slot.byValue.set(v, a);
      a.makePermanent();
    }
    return a;
  } finally {
    onCreate = hook;
  }
}
