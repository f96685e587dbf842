/**
 * @file The README's first command (`npm start`): a tour of the transforms on a small problem.
 * Fits a two-layer MLP to a noisy sine with `jit(valueAndGrad(loss))`, then shows per-example
 * gradients (`vmap(grad)`), a Hessian-vector product (`jvp(grad)`), a gradient check, and the IR.
 */
import { grad, jit, jvp, makeJaxpr, nn, np, random, tree, valueAndGrad, vmap, checkGrads, hessian } from "../src/index.js";
import type { Value } from "../src/index.js";

type Params = { w1: Value; b1: Value; w2: Value; b2: Value };

function init(key: Value, hidden: number): Params {
  const [k1, k2] = random.split(key, 2) as unknown as [Value, Value];
  return {
    w1: np.multiply(random.normal(k1, [1, hidden]), 1.0),
    b1: np.zeros([hidden]),
    w2: np.multiply(random.normal(k2, [hidden, 1]), 1 / Math.sqrt(hidden)),
    b2: np.zeros([1]),
  };
}

const predict = (p: Params, x: Value): Value => np.add(np.matmul(np.tanh(np.add(np.matmul(x, p.w1), p.b1)), p.w2), p.b2);
const loss = (p: Params, x: Value, y: Value): Value => np.mean(np.square(np.subtract(predict(p, x), y)));

async function main() {
  console.log("webgrad demo: fitting y = sin(3x) with a 1-32-1 tanh MLP on the CPU backend\n");
  const key = random.key(0);
  const [kData, kNoise, kInit] = random.split(key, 3) as unknown as [Value, Value, Value];
  const x = np.reshape(random.uniform(kData, [256], { minval: -1, maxval: 1 }), [256, 1]); // [batch, 1]
  const y = np.add(np.sin(np.multiply(x, 3)), np.multiply(random.normal(kNoise, [256, 1]), 0.05)); // [batch, 1]

  let params = init(kInit, 32);
  const lr = 0.1;
  const step = jit((p: Params, x: Value, y: Value) => {
    const [l, g] = valueAndGrad(loss)(p, x, y);
    return [tree.map((w: Value, gw: Value) => np.subtract(w, np.multiply(gw, lr)), p, g), l];
  });
  const t0 = performance.now();
  for (let i = 0; i <= 500; i++) {
    const [p, l] = step(params, x, y) as [Params, Value];
    params = p;
    if (i % 100 === 0) console.log(`  step ${String(i).padStart(3)}  loss ${(Number(await l.item())).toFixed(5)}`);
  }
  console.log(`  500 jitted steps in ${((performance.now() - t0) / 1000).toFixed(2)} s\n`);

  // Per-example gradients: vmap over grad, no loop.
  const perExample = vmap((xi: Value, yi: Value) => grad(loss)(params, np.reshape(xi, [1, 1]), np.reshape(yi, [1, 1])), {
    inAxes: [0, 0],
  })(np.reshape(x, [256]), np.reshape(y, [256])) as Params;
  console.log(`per-example gradients: w1 has shape [${perExample.w1.shape}] (one gradient per example)`);

  // Hessian-vector product by forward-over-reverse.
  const f = (v: Value) => np.sum(np.power(v, 3));
  const v = np.array([1, 2, 3]);
  const [, hvp] = jvp(grad(f), [v], [np.ones([3])]);
  console.log(`Hessian-vector product of sum(x^3) at [1,2,3] along ones: ${JSON.stringify(await hvp.toArray())} (expected [6,12,18])`);
  console.log(`hessian of sum(x^3): ${JSON.stringify(await (hessian(f)(v) as Value).toArray())}`);

  // Gradient verification against finite differences (float64).
  const report = checkGrads((w: Value) => np.sum(np.tanh(np.matmul(w, w))), [np.array([[0.3, -0.2], [0.1, 0.4]], { dtype: "float64" })], {
    order: 2,
  });
  console.log(`checkGrads (order 2, fwd + rev): passed, max relative error ${report.maxRelErr.toExponential(2)}\n`);

  console.log("The IR (jaxpr) of the gradient of tanh(w·x) summed:");
  console.log(makeJaxpr(grad((w: Value, xx: Value) => np.sum(np.tanh(np.matmul(xx, w)))))(np.ones([2, 2]), np.ones([3, 2])).toString());
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
