/**
 * @file The WebGPU device through the public API: `np` functions, grad / vmap / jit and random on
 * arrays created on `webgpu:0`, against the same program on the CPU device; and the fault paths
 * (float64, allocations over the device limits, WGSL compile errors with the numbered source, device
 * loss, sync reads). The long training loop with flat memory is memory.test.ts.
 *
 * JS numbers inside np calls become scalars on the *default* device, so these suites make webgpu:0 the
 * default while they run (see the report: placement of uncommitted scalars is a core question).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BackendError,
  DTypeError,
  dispose,
  grad,
  jit,
  np,
  random,
  scope,
  setDefaultDevice,
  vmap,
  type Value,
} from "../../src/index.js";
import { Array as WArray } from "../../src/ops/array.js";
import { createWebGpuBackend, type WebGpuBackend } from "../../src/ops/backend/webgpu/index.js";
import { gpu, noGpu, Rng } from "./helpers.js";

type Fn = (...xs: Value[]) => Value;

/** Runs `f` with `dev` as the default device (restored afterwards). */
function on<T>(dev: string, f: () => T): T {
  setDefaultDevice(dev);
  try {
    return f();
  } finally {
    setDefaultDevice("webgpu:0");
  }
}

function randn(shape: number[], rng: Rng, scale = 1): Float32Array {
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => scale * rng.uniform(-1, 1));
}

/** The same function on both devices, from the same host data; results compared elementwise. */
async function both(f: Fn, inputs: { data: Float32Array | Int32Array; shape: number[] }[], rtol = 2e-6, atol = 1e-6): Promise<void> {
  // Inside scope(): every intermediate is disposed, so no garbage is left for the memory test.
  const run = (dev: string): WArray =>
    on(dev, () => scope(() => f(...inputs.map((i) => np.array(i.data, { shape: i.shape, device: dev }))))) as WArray;
  const cArr = run("cpu");
  const c = (await cArr.data()) as Float32Array;
  cArr.dispose();
  const gArr = run("webgpu:0");
  expect(gArr.device.id).toBe("webgpu:0");
  const g = (await gArr.data()) as Float32Array;
  gArr.dispose();
  expect(g.length).toBe(c.length);
  for (let i = 0; i < c.length; i++) {
    const ok = Object.is(c[i], g[i]) || Math.abs(c[i]! - g[i]!) <= atol + rtol * Math.abs(c[i]!);
    if (!ok) throw new Error(`element ${i}: webgpu ${g[i]} vs cpu ${c[i]}`);
  }
}

// Skipped only without an adapter: helpers.ts printed why (and fails instead under WEBGRAD_REQUIRE_WEBGPU=1).
describe.skipIf(noGpu)("webgpu through the public API", () => {
  beforeAll(() => setDefaultDevice("webgpu:0"));
  afterAll(() => setDefaultDevice("cpu"));

  it("np functions match the CPU device", async () => {
    const rng = new Rng(1);
    const a = { data: randn([4, 6], rng, 2), shape: [4, 6] };
    const b = { data: randn([6, 5], rng), shape: [6, 5] };
    const v = { data: randn([6], rng), shape: [6] };
    const cases: [string, Fn, (typeof a)[]][] = [
      ["sin·exp + 1", (x) => np.add(np.multiply(np.sin(x), np.exp(x)), 1), [a]],
      ["broadcast row", (x, y) => np.subtract(x, y), [a, v]],
      ["matmul", (x, y) => np.matmul(x, y), [a, b]],
      ["matmul of a transpose", (x) => np.matmul(np.transpose(x), x), [a]],
      ["sum / mean / max over axes", (x) => np.add(np.sum(x, { axis: 0 }), np.add(np.mean(x, { axis: 0 }), np.max(x, { axis: 0 }))), [a]],
      ["logsumexp", (x) => np.logsumexp(x, { axis: 1 }), [a]],
      ["argmax as float", (x) => np.astype(np.argmax(x, { axis: 1 }), "float32"), [a]],
      ["cumsum reverse", (x) => np.cumsum(x, { axis: 1, reverse: true }), [a]],
      ["sort", (x) => np.sort(x, { axis: 1 }), [a]],
      ["take", (x) => np.take(x, np.array([3, 0, 0, 2], { dtype: "int32" }), 0), [a]],
      ["where / clip", (x) => np.where(np.greater(x, 0), np.clip(x, -0.5, 0.5), np.square(x)), [a]],
      ["concatenate / pad / flip", (x) => np.flip(np.pad(np.concatenate([x, x], 1), [[1, 0], [0, 2]]), 0), [a]],
      ["reshape of a transpose", (x) => np.reshape(np.transpose(x), [3, 8]), [a]],
      ["einsum", (x, y) => np.einsum("ij,jk->ik", x, y), [a, b]],
    ];
    for (const [name, f, ins] of cases) {
      try {
        await both(f, ins);
      } catch (e) {
        throw new Error(`${name}: ${(e as Error).message}`);
      }
    }
  });

  it("grad, vmap, jit and their compositions match the CPU device", async () => {
    const rng = new Rng(2);
    const w = { data: randn([5, 3], rng), shape: [5, 3] };
    const xs = { data: randn([7, 5], rng), shape: [7, 5] };
    const loss = (wv: Value, x: Value): Value => np.mean(np.square(np.tanh(np.matmul(x, wv))));
    await both((wv, x) => grad(loss)(wv, x), [w, xs]);
    await both((wv, x) => jit(grad(loss))(wv, x), [w, xs]);
    await both((wv, x) => grad(jit(loss))(wv, x), [w, xs]);
    // Per-example gradients: vmap over the rows of x.
    await both((wv, x) => vmap((row: Value) => grad(loss)(wv, np.reshape(row, [1, 5])))(x), [w, xs]);
    await both((wv, x) => jit(vmap((row: Value) => np.sum(np.multiply(row, np.sum(wv, { axis: 1 })))))(x), [w, xs]);
    // Second order.
    await both((x) => grad((y: Value) => np.sum(grad((z: Value) => np.sum(np.sin(z)))(y)))(x), [xs]);
  });

  it("random bits are bit-identical to the CPU device; samplers agree", async () => {
    const draw = (dev: string) =>
      on(dev, () =>
        scope(() => {
          const k = random.key(42);
          const k1 = np.reshape(np.take(random.split(k), np.array([1], { dtype: "int32" }), 0), [2]);
          return [random.bits(k, [1000]), random.uniform(random.foldIn(k, 3), [257]), random.normal(k1, [64])] as WArray[];
        }),
      );
    const cs = draw("cpu");
    const c = await Promise.all(cs.map((x) => x.data()));
    const gs = draw("webgpu:0");
    expect(gs.every((x) => x.device.id === "webgpu:0")).toBe(true);
    const g = await Promise.all(gs.map((x) => x.data()));
    dispose([cs, gs]);
    expect([...g[0]!]).toEqual([...c[0]!]);
    expect([...g[1]!]).toEqual([...c[1]!]); // the mantissa trick is exact
    for (let i = 0; i < c[2]!.length; i++) expect(Math.abs(g[2]![i]! - c[2]![i]!)).toBeLessThan(1e-5);
  });

  it("float64 is a DTypeError naming the device", () => {
    expect(() => np.array([1, 2], { dtype: "float64", device: "webgpu:0" })).toThrow(DTypeError);
    expect(() => np.array([1, 2], { dtype: "float64", device: "webgpu:0" })).toThrow(/float64 is not supported on webgpu:0/);
    expect(() => gpu.fromHost(Float64Array.from([1]), { shape: [1], dtype: "float64" })).toThrow(/float64 is not supported on webgpu:0/);
    const x = np.array([1, 2]);
    expect(() => np.astype(x, "float64")).toThrow(/float64 is not supported on webgpu:0/);
  });

  it("arrays larger than a storage binding fail before submitting, naming bytes and limit", () => {
    const limit = Math.min(gpu.rt.limits.maxBufferSize, gpu.rt.limits.maxStorageBufferBindingSize);
    const n = Math.floor(limit / 4) + 1;
    expect(() => gpu.full({ shape: [n], dtype: "float32" }, 0)).toThrow(BackendError);
    expect(() => gpu.full({ shape: [n], dtype: "float32" }, 0)).toThrow(new RegExp(`got ${n * 4} bytes`));
    expect(() => gpu.full({ shape: [n], dtype: "float32" }, 0)).toThrow(new RegExp(`= ${limit} bytes`));
    // The device is still usable afterwards.
    expect(() => gpu.full({ shape: [4], dtype: "float32" }, 0)).not.toThrow();
  });

  it("WebGPU arrays are read asynchronously only", async () => {
    const x = np.array([1, 2, 3]) as WArray;
    expect(() => x.dataSync()).toThrow(/only be read asynchronously/);
    expect(await x.toArray()).toEqual([1, 2, 3]);
  });
});

// Skipped only without an adapter: helpers.ts printed why (and fails instead under WEBGRAD_REQUIRE_WEBGPU=1).
describe.skipIf(noGpu)("webgpu faults on a separate device", () => {
  it("a WGSL compile error surfaces as a BackendError with the messages and numbered source", async () => {
    const made = (await createWebGpuBackend({}, "webgpu:test"))!;
    const b: WebGpuBackend = made.backend;
    const x = b.fromHost(Float32Array.from([1, 2]), { shape: [2], dtype: "float32" });
    b.compileForTest({
      key: "broken",
      source: () => "@group(0) @binding(0) var<storage, read> P: array<u32>;\n@compute @workgroup_size(1)\nfn main() {\n  let y: f32 = undefinedThing;\n}",
    });
    const err = await b.read(x).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BackendError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/WGSL compilation of kernel "broken" failed/);
    expect(msg).toMatch(/undefinedThing/); // the compiler's message
    expect(msg).toContain("   4 |   let y: f32 = undefinedThing;"); // the numbered source
    // Results after a fault are never returned: every later operation throws the same error.
    expect(() => b.unary("neg", x, { shape: [2], dtype: "float32" })).toThrow(/WGSL compilation/);
    b.destroy();
  });

  it("device loss is recorded and named by the next operation", async () => {
    const made = (await createWebGpuBackend({}, "webgpu:lost"))!;
    const b = made.backend;
    const x = b.fromHost(Float32Array.from([1, 2]), { shape: [2], dtype: "float32" });
    expect([...(await b.read(x))]).toEqual([1, 2]);
    b.destroy();
    await made.gpuDevice.lost;
    expect(() => b.unary("neg", x, { shape: [2], dtype: "float32" })).toThrow(BackendError);
    expect(() => b.unary("neg", x, { shape: [2], dtype: "float32" })).toThrow(/webgpu:lost: the WebGPU device was lost \(destroyed/);
    await expect(b.read(x)).rejects.toThrow(/device was lost/);
  });
});
