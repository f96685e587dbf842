/**
 * @file CPU backend benchmark (`npm run bench`): matmul GFLOP/s at 256/512/1024 squares against a
 * plain-JS i-k-j triple loop measured in the same run (the ratio is what to compare across machines),
 * the per-op overhead of eager dispatch (scalar adds through the full np -> bind -> kernel path)
 * against a jitted version of the same chain, and a GELU (tanh form) forward on [256, 512] float32 as
 * eager ops one by one against one fused kernel (`compileScalarProgram`, Wasm SIMD and JS paths): what
 * the jit compiler's fusion buys on the CPU.
 */
import { jit, nn, np } from "../src/index.js";
import { CpuBuffer } from "../src/ops/backend/cpu/buffer.js";
import { compileScalarProgram, configureFused } from "../src/ops/backend/cpu/wasm/fused.js";
import type { ScalarNode } from "../src/ops/compile/scalar-program.js";
import type { Array as WArray, Value } from "../src/index.js";

function timeIt(fn: () => void, minMs = 300): number {
  fn(); // warm-up
  let n = 0;
  const t0 = performance.now();
  let t = t0;
  do {
    fn();
    n++;
    t = performance.now();
  } while (t - t0 < minMs);
  return (t - t0) / n;
}

function naiveMatmul(a: Float32Array, b: Float32Array, n: number): Float32Array {
  const c = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k]!;
      const row = k * n;
      const out = i * n;
      for (let j = 0; j < n; j++) c[out + j]! += aik * b[row + j]!;
    }
  }
  return c;
}

function rand(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
  return a;
}

console.log("matmul (float32, square), CPU backend vs a plain-JS i-k-j loop in the same run");
console.log("  n     webgrad GFLOP/s   plain-JS GFLOP/s   ratio");
for (const n of [256, 512, 1024]) {
  const ha = rand(n * n);
  const hb = rand(n * n);
  const a = np.array(ha, { shape: [n, n] });
  const b = np.array(hb, { shape: [n, n] });
  const flops = 2 * n * n * n;
  const ms = timeIt(() => (np.matmul(a, b) as WArray).dataSync(), n >= 1024 ? 1000 : 300);
  const msNaive = timeIt(() => naiveMatmul(ha, hb, n), n >= 1024 ? 1000 : 300);
  const g = flops / ms / 1e6;
  const gn = flops / msNaive / 1e6;
  console.log(`  ${String(n).padEnd(5)} ${g.toFixed(2).padStart(10)}        ${gn.toFixed(2).padStart(10)}        ${(g / gn).toFixed(2)}x`);
}

// More cases (array operands, broadcasts, unary, reductions, scopes) and the GC share of each:
// bench/eager-overhead.ts.
console.log("\neager dispatch overhead (chain of 100 scalar adds)");
const x = np.array(1);
const one = np.array(1);
const chain = (v: Value) => {
  let y = v;
  for (let i = 0; i < 100; i++) y = np.add(y, 1);
  return y;
};
const chainArray = (v: Value) => {
  let y = v;
  for (let i = 0; i < 100; i++) y = np.add(y, one);
  return y;
};
const eagerMs = timeIt(() => chain(x));
const eagerArrayMs = timeIt(() => chainArray(x));
const jitted = jit(chain);
const jitMs = timeIt(() => jitted(x));
console.log(`  eager np.add(y, 1): ${((eagerMs * 1000) / 100).toFixed(2)} µs per op`);
console.log(`  eager np.add(y, one): ${((eagerArrayMs * 1000) / 100).toFixed(2)} µs per op`);
console.log(`  jit (interpreted jaxpr): ${((jitMs * 1000) / 100).toFixed(2)} µs per op`);

console.log("\nGELU (tanh form) forward on [256, 512] float32");
{
  const shape = [256, 512];
  const host = rand(256 * 512);
  const xa = np.array(host, { shape });
  const eagerGelu = timeIt(() => (nn.gelu(xa) as WArray).dispose());
  const f = "float32" as const;
  const c = (value: number): ScalarNode => ({ op: "const", value: Math.fround(value), dtype: f });
  const nodes: ScalarNode[] = [
    { op: "load", input: 0, dtype: f }, // 0: x
    { op: "binary", fn: "mul", x: 0, y: 0, dtype: f }, // 1: x²
    { op: "binary", fn: "mul", x: 1, y: 0, dtype: f }, // 2: x³
    c(0.044715), // 3
    { op: "binary", fn: "mul", x: 3, y: 2, dtype: f }, // 4
    { op: "binary", fn: "add", x: 0, y: 4, dtype: f }, // 5
    c(Math.sqrt(2 / Math.PI)), // 6
    { op: "binary", fn: "mul", x: 6, y: 5, dtype: f }, // 7
    { op: "unary", fn: "tanh", x: 7, dtype: f }, // 8
    c(1), // 9
    { op: "binary", fn: "add", x: 9, y: 8, dtype: f }, // 10
    c(0.5), // 11
    { op: "binary", fn: "mul", x: 11, y: 0, dtype: f }, // 12
    { op: "binary", fn: "mul", x: 12, y: 10, dtype: f }, // 13
  ];
  const kernel = compileScalarProgram({ shape, inputs: [{ dtype: f }], nodes, outputs: [13] });
  const xb = new CpuBuffer(host, f, shape);
  const fusedWasm = timeIt(() => kernel([xb]));
  configureFused({ wasm: false });
  const fusedJs = timeIt(() => kernel([xb]));
  configureFused({ wasm: true });
  console.log(`  eager ops: ${(eagerGelu * 1000).toFixed(0)} µs; one fused kernel: Wasm SIMD ${(fusedWasm * 1000).toFixed(0)} µs, JS ${(fusedJs * 1000).toFixed(0)} µs`);
}
