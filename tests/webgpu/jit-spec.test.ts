/**
 * @file The jit compiler (src/ops/compile/) on WebGPU against eager CPU, for every op row of the spec
 * table (tests/property/spec.ts): `jit(f)` compiled for `webgpu:0` gives the CPU backend's eager
 * result on the same data (shape, dtype, values within twice the row's float32 tolerance, as
 * tests/webgpu/properties.test.ts allows between two backends), and it really ran compiled (not the
 * interpreter fallback). The CPU is the oracle; it is itself checked against float64 references in
 * tests/property/.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bind, primitiveRegistry } from "../../src/autodiff/core.js";
import { dispose, jit, np, setDefaultDevice, Array as WArray, type DType, type Value } from "../../src/index.js";
import { installJitCompiler, lastJitStats, resetJitStats, uninstallJitCompiler } from "../../src/ops/compile/index.js";
import { assertClose, HostArray, seedArb, Tol } from "../property/harness.js";
import { makeData, OP_ROWS, OpRow, Sig } from "../property/spec.js";
import { noGpu } from "./helpers.js";

const GPU = "webgpu:0";
const RUNS = Number(process.env.WEBGPU_FC_RUNS ?? "4") || 4;
const fcOpts = (numRuns: number): fc.Parameters<unknown> => ({
  numRuns,
  ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
});

function on<T>(dev: string, f: () => T): T {
  setDefaultDevice(dev);
  try {
    return f();
  } finally {
    setDefaultDevice("cpu");
  }
}

async function host(v: Value | unknown): Promise<HostArray> {
  if (!(v instanceof WArray)) throw new Error(`expected a concrete Array, got ${String(v)}`);
  const d = await v.data();
  return { shape: [...v.shape], dtype: v.dtype, data: Float64Array.from(d as ArrayLike<number>, Number) };
}

const webGpuSig = (sig: Sig): boolean =>
  sig.operands.every((o) => o.dtype !== "float64") && !JSON.stringify(sig.params).includes('"float64"');

function caseArb(row: OpRow) {
  return fc.tuple(row.sig("value").filter(webGpuSig), seedArb).map(([sig, seed]) => {
    const data = makeData(sig, seed, "value");
    const str = () =>
      `params ${JSON.stringify(sig.params)}; operands ${data.map((x) => `${x.dtype}[${x.shape.join(",")}] ${JSON.stringify(Array.from(x.data))}`).join("; ")}`;
    return Object.assign({ sig, data }, { [fc.toStringMethod]: str });
  });
}

function tolFor(row: OpRow, dtype: DType): Tol {
  if (dtype !== "float32") return { rtol: 0, atol: 0 };
  return { rtol: row.tol32.rtol * 2, atol: row.tol32.atol * 2 };
}

async function checkRow(row: OpRow, sig: Sig, data: HostArray[]): Promise<void> {
  const prim = primitiveRegistry.get(row.name)!;
  const f = (...xs: Value[]): Value[] => bind(prim, xs, sig.params);
  const what = `${row.name} (params ${JSON.stringify(sig.params)}; ${sig.operands.map((o) => `${o.dtype}[${o.shape.join(",")}]`).join(", ")})`;
  const cpuIns = data.map((x) => np.array(x.data, { shape: x.shape, dtype: x.dtype, device: "cpu" }));
  const gpuIns = data.map((x) => np.array(x.data, { shape: x.shape, dtype: x.dtype, device: GPU }));
  const want = f(...cpuIns);
  resetJitStats();
  const got = on(GPU, () => jit(f)(...gpuIns) as Value[]);
  try {
    expect(lastJitStats(), `${what}: ran compiled`).not.toBeNull();
    const [w, g] = await Promise.all([Promise.all(want.map(host)), Promise.all(got.map(host))]);
    expect(g.length).toBe(w.length);
    const ref = row.ref(data, sig.params);
    w.forEach((wi, i) => {
      const want2: HostArray = ref[i]?.errScale ? { ...wi, errScale: ref[i]!.errScale } : wi;
      assertClose(g[i]!, want2, tolFor(row, wi.dtype), `${what}: jit on webgpu vs eager cpu, output ${i}`);
    });
  } finally {
    dispose([cpuIns, gpuIns, want, got]);
  }
}

describe.skipIf(noGpu)("jit compiler on webgpu == eager cpu, every spec row", () => {
  beforeAll(() => installJitCompiler());
  afterAll(() => {
    uninstallJitCompiler();
    setDefaultDevice("cpu");
  });
  for (const row of OP_ROWS) {
    if (!row.dtypes.some((d) => d !== "float64")) continue;
    it(row.name, async () => {
      await fc.assert(fc.asyncProperty(caseArb(row), (c) => checkRow(row, c.sig, c.data)), fcOpts(RUNS));
    });
  }
});
