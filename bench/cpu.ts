/**
 * @file CPU backend benchmark (`npm run bench`): matmul GFLOP/s at 256/512/1024 squares against a
 * plain-JS i-k-j triple loop measured in the same run (the ratio is what to compare across machines),
 * and the per-op overhead of eager dispatch (scalar adds through the full np -> bind -> kernel path)
 * against a jitted version of the same chain.
 */
import { jit, np } from "../src/index.js";
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

console.log("\neager dispatch overhead (chain of 100 scalar adds)");
const x = np.array(1);
const chain = (v: Value) => {
  let y = v;
  for (let i = 0; i < 100; i++) y = np.add(y, 1);
  return y;
};
const eagerMs = timeIt(() => chain(x));
const jitted = jit(chain);
const jitMs = timeIt(() => jitted(x));
console.log(`  eager: ${((eagerMs * 1000) / 100).toFixed(2)} µs per op`);
console.log(`  jit (interpreted jaxpr): ${((jitMs * 1000) / 100).toFixed(2)} µs per op`);
