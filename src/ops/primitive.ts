/**
 * @file `definePrimitive` for the ops layer: a primitive's eager implementation is its `lower` rule run
 * on the device's backend (every backend implements the closed kernel-op set of backend/kernel.ts), so
 * a primitive is one stanza and backends never need to know about it.
 */
import { ShapedArray } from "../autodiff/aval.js";
import { Concrete, definePrimitiveRules, Primitive, PrimitiveRules } from "../autodiff/core.js";
import { BackendError } from "../autodiff/errors.js";
import { Array, Device, getDefaultDevice, wrapBuffer } from "./array.js";
import type { KernelBuilder } from "./backend/kernel.js";

export type LowerRule<P> = <H>(
  b: KernelBuilder<H>,
  inputs: readonly H[],
  params: P,
  avalsIn: readonly ShapedArray[],
  avalsOut: readonly ShapedArray[],
) => H[];

export interface OpsPrimitive<P = any> extends Primitive<P> {
  /** Lowering to kernel ops; used for eager execution and by compilers. */
  readonly lower: LowerRule<P>;
}

/** The device an op runs on (JAX's rule, see placeArgs); throws for two committed devices. */
function targetDevice(name: string, args: readonly Array[]): Device {
  let target: Device | null = null;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.committed) continue;
    if (target === null) target = a.device;
    else if (a.device !== target) {
      throw new BackendError(
        `${name}: arguments live on different devices (${target.id} and ${a.device.id})\nTip: move them with devicePut(x, device)`,
      );
    }
  }
  return target ?? (args.length > 0 ? args[0]!.device : getDefaultDevice());
}

/** `args`, or copies of the ones not on `dev` (uncommitted arrays follow the committed ones). */
function moveTo(name: string, dev: Device, args: readonly Array[]): readonly Array[] {
  for (let i = 0; i < args.length; i++) {
    if (args[i]!.device !== dev) return args.map((a) => (a.device === dev ? a : a.copyTo(dev, name)));
  }
  return args;
}

/**
 * Places the arguments of an op on one device, following JAX's rule: arrays created without an explicit
 * device (JS numbers, np.array without `device`) are *uncommitted* and follow the committed ones, so
 * `np.add(gpuArray, 1)` works with the CPU as the default device. Two committed devices are an error.
 */
export function placeArgs(name: string, args: readonly Array[]): [Device, readonly Array[]] {
  const dev = targetDevice(name, args);
  return [dev, moveTo(name, dev, args)];
}

/**
 * A builder that records every handle the backend returns, so a lowering's intermediates (handles that
 * are neither inputs nor outputs) can be released right after it (one per backend, reused).
 *
 * It is a plain object whose prototype is the backend, with one recording wrapper per backend method,
 * made once: a Proxy `get` trap plus a Map lookup on every kernel call cost more than most small
 * kernels. Non-method properties read through to the backend.
 */
interface Recorder {
  readonly builder: KernelBuilder<unknown>;
  /** Handles the backend returned; entries below `top` are live records (the rest is stale). */
  readonly created: unknown[];
  top: number;
}
const recorders = new WeakMap<object, Recorder>();
let lastBackend: object | null = null;
let lastRecorder: Recorder | null = null;
function recorderFor(backend: KernelBuilder<unknown>): Recorder {
  if (backend === lastBackend) return lastRecorder!;
  let r = recorders.get(backend);
  if (!r) r = makeRecorder(backend);
  lastBackend = backend;
  lastRecorder = r;
  return r;
}

function makeRecorder(backend: KernelBuilder<unknown>): Recorder {
  const rec: Recorder = { builder: Object.create(backend) as KernelBuilder<unknown>, created: [], top: 0 };
  const builder = rec.builder as unknown as Record<PropertyKey, unknown>;
  const target = backend as unknown as Record<PropertyKey, unknown>;
  const record = (out: unknown): unknown => {
    if (globalThis.Array.isArray(out)) for (const h of out) rec.created[rec.top++] = h;
    else rec.created[rec.top++] = out;
    return out;
  };
  const names = new Set<PropertyKey>();
  for (let o: object | null = backend; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const k of Reflect.ownKeys(o)) if (k !== "constructor") names.add(k);
  }
  for (const prop of names) {
    const desc = findDescriptor(backend, prop)!;
    if (desc.get !== undefined) {
      // Accessors run on the backend itself (they may use private state), as the Proxy did.
      Object.defineProperty(builder, prop, { get: () => target[prop], configurable: true });
    } else if (typeof desc.value === "function") {
      // The method is looked up at each call (a cheap monomorphic load), so replacing a backend method
      // later (a test spy) is seen, as it was through the Proxy. Calls are passed on with exactly the
      // arguments given (no rest-parameter array: this runs once per kernel call).
      type Fn = (...x: unknown[]) => unknown;
      const call = function (this: unknown, a?: unknown, b?: unknown, c?: unknown, d?: unknown, e?: unknown, f?: unknown): unknown {
        const fn = target[prop] as Fn;
        switch (arguments.length) {
          case 0:
            return fn.call(backend);
          case 1:
            return fn.call(backend, a);
          case 2:
            return fn.call(backend, a, b);
          case 3:
            return fn.call(backend, a, b, c);
          case 4:
            return fn.call(backend, a, b, c, d);
          case 5:
            return fn.call(backend, a, b, c, d, e);
          case 6:
            return fn.call(backend, a, b, c, d, e, f);
          default:
            return fn.apply(backend, globalThis.Array.prototype.slice.call(arguments));
        }
      };
      const wrapped =
        prop === "typeOf"
          ? call
          : function (this: unknown): unknown {
              // eslint-disable-next-line prefer-rest-params
              return record((call as Fn).apply(this, arguments as unknown as unknown[]));
            };
      Object.defineProperty(builder, prop, { value: wrapped, configurable: true, writable: true });
    } // data properties are read through the prototype
  }
  recorders.set(backend, rec);
  return rec;
}

function findDescriptor(o: object | null, prop: PropertyKey): PropertyDescriptor | undefined {
  for (; o !== null; o = Object.getPrototypeOf(o)) {
    const d = Object.getOwnPropertyDescriptor(o, prop);
    if (d) return d;
  }
  return undefined;
}

/** The Array of an output handle; each Array owns its handle, so an input handed back is re-viewed. */
function own(b: unknown, aval: ShapedArray, inputs: readonly unknown[], device: Device, committed: boolean): Array {
  const out = wrapBuffer(has(inputs, b) ? device.backend.reshape(b, aval.shape) : b, aval, device);
  out.committed = committed;
  return out;
}

const avalOf = (a: Array): ShapedArray => a.aval;
const bufferOf = (a: Array): unknown => a.buffer;

/** `xs.includes(h)` without the generic-array-builtin call (xs has a handful of elements). */
function has(xs: readonly unknown[], h: unknown): boolean {
  for (let i = 0; i < xs.length; i++) if (xs[i] === h) return true;
  return false;
}

export function definePrimitive<P>(rules: Omit<PrimitiveRules<P>, "impl"> & { lower: LowerRule<P> }): OpsPrimitive<P> {
  const name = rules.name;
  const abstractEval = rules.abstractEval;
  const lower = rules.lower;
  // The eager path of every op on concrete arrays; written as plain loops because it runs once per op
  // in users' eager loops (see bench/eager-overhead.ts).
  const impl = (args: readonly Concrete[], params: P): Concrete[] => {
    const device = targetDevice(name, args as readonly Array[]);
    const arrays = moveTo(name, device, args as readonly Array[]);
    // (`map` makes packed arrays of the exact length, which rules destructure fastest.)
    const avalsIn = arrays.map(avalOf);
    const inputs = arrays.map(bufferOf);
    let committed = false;
    for (let i = 0; i < arrays.length; i++) if (arrays[i]!.committed) committed = true;
    const avalsOut = abstractEval(avalsIn, params);
    const backend = device.backend;
    const rec = recorderFor(backend as KernelBuilder<unknown>);
    const created = rec.created;
    const mark = rec.top;
    let outs: unknown[] | undefined;
    try {
      outs = lower(rec.builder, inputs, params, avalsIn, avalsOut);
    } finally {
      // Intermediates of the lowering (e.g. a cast before a reduction) are released at once.
      const end = rec.top;
      rec.top = mark;
      for (let k = mark; k < end; k++) {
        const h = created[k];
        created[k] = undefined; // hold no handle past its op
        if (!has(inputs, h) && !(outs !== undefined && has(outs, h))) backend.release(h);
      }
    }
    const handles = outs!;
    const n = handles.length;
    if (n === 1) return [own(handles[0], avalsOut[0]!, inputs, device, committed)]; // the common case, packed
    const result = new globalThis.Array<Concrete>(n);
    for (let i = 0; i < n; i++) result[i] = own(handles[i], avalsOut[i]!, inputs, device, committed);
    return result;
  };
  return definePrimitiveRules<P>({ ...rules, impl }) as OpsPrimitive<P>;
}
