/**
 * @file Tests of the language-model trainer and the `webgrad` CLI (src/cli). Expected values come from
 * outside the code under test: the uninterrupted run is the reference for the resumed one (bit for
 * bit), ln(256) is the loss of a uniform byte model (a fresh PaLM's logits are near 0), and the output
 * files are checked structurally (SVG / HTML / safetensors with a template).
 */
import "../src/index.js";
import { mkdtempSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { evalShape, tree } from "../src/index.js";
import type { Array as WArray } from "../src/ops/array.js";
import * as random from "../src/ops/random.js";
import * as palm from "../src/nn/palm.js";
import { loadCheckpoint } from "../src/io/checkpoint.js";
import { main } from "../src/cli/index.js";
import { lossCurveSvg, niceTicks } from "../src/cli/plot.js";
import { trainLm, TrainLmOptions } from "../src/cli/train-lm.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "webgrad-train-"));
const bits = (x: number[]): string[] => x.map((v) => Buffer.from(new Float64Array([v]).buffer).toString("hex"));

const small: TrainLmOptions = {
  dim: 32,
  depth: 1,
  heads: 2,
  dimHead: 8,
  ffMult: 2,
  batch: 4,
  seq: 24,
  lr: 5e-3,
  evalEvery: 3,
  evalBatches: 2,
  sampleEvery: 0,
  sampleTokens: 6,
  quiet: true,
  device: "cpu",
};

describe("trainLm", () => {
  it("resumes exactly: N/2 steps + checkpoint + resume reproduce the N-step run bit for bit", async () => {
    const N = 8;
    const a = await trainLm({ ...small, steps: N, out: tmp() });
    const outB = tmp();
    const b = await trainLm({ ...small, steps: N, stopAt: N / 2, out: outB });
    expect(b.step).toBe(N / 2);
    expect(bits(b.losses)).toEqual(bits(a.losses.slice(0, N / 2)));
    const c = await trainLm({ ...small, resume: join(outB, "checkpoint.safetensors"), out: tmp() });
    expect(c.step).toBe(N);
    expect(c.losses.length).toBe(N);
    expect(bits(c.losses)).toEqual(bits(a.losses)); // the resumed half too, bit for bit
    // The interrupted run also evaluated at its stop (step N/2); otherwise the same validation points.
    expect(c.valLosses.filter(([s]) => s !== N / 2)).toEqual(a.valLosses);
    const pa = tree.leaves<WArray>(a.params).map((x) => Buffer.from(x.dataSync().buffer).toString("hex"));
    const pc = tree.leaves<WArray>(c.params).map((x) => Buffer.from(x.dataSync().buffer).toString("hex"));
    expect(pc).toEqual(pa);
    expect(c.samples.at(-1)!.text).toBe(a.samples.at(-1)!.text);
  });

  it("learns: starts at the uniform loss ln(256) and goes well below it", async () => {
    const r = await trainLm({ ...small, steps: 40, lr: 1e-2, evalEvery: 20 });
    expect(Math.abs(r.losses[0]! - Math.log(256))).toBeLessThan(0.05);
    const tail = r.losses.slice(-5).reduce((s, x) => s + x, 0) / 5;
    expect(tail).toBeLessThan(3.6);
    expect(r.valLosses.at(-1)![1]).toBeLessThan(3.6);
    expect(r.tokensPerSecond).toBeGreaterThan(0);
  });

  it("writes a checkpoint that loads against the config's template, a loss plot and samples", async () => {
    const out = tmp();
    const r = await trainLm({ ...small, steps: 4, out, samplePrompt: "The " });
    const config = r.config;
    const ck = await loadCheckpoint(join(out, "checkpoint.safetensors"), { like: { params: evalShape(() => palm.init(random.key(0), config)) } });
    expect(ck.step).toBe(4);
    expect(ck.config).toEqual(config);
    const svg = readFileSync(join(out, "loss.svg"), "utf8");
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.trim().endsWith("</svg>")).toBe(true);
    const poly = /<polyline points="([^"]+)"/.exec(svg)!;
    expect(poly[1]!.trim().split(/\s+/).length).toBe(4); // one point per step
    expect(svg.match(/<circle /g)!.length).toBeGreaterThanOrEqual(2); // validation points (+ legend)
    const html = readFileSync(join(out, "loss.html"), "utf8");
    expect(html).toContain("<svg");
    expect(html).toContain("sample after step 4");
    expect(readFileSync(join(out, "samples.txt"), "utf8")).toMatch(/^--- step 4\nThe /);
  });

  it("refuses model options that contradict the checkpoint, and bad options", async () => {
    const out = tmp();
    await trainLm({ ...small, steps: 2, out });
    await expect(trainLm({ ...small, dim: 48, resume: join(out, "checkpoint.safetensors") })).rejects.toThrow(/--dim 48 differs from the checkpoint's 32/);
    await expect(trainLm({ ...small, steps: 0 })).rejects.toThrow(/steps must be an integer >= 1/);
    await expect(trainLm({ ...small, steps: 2, corpus: "too short" })).rejects.toThrow(/fewer than one crop/);
  });
});

describe("the webgrad CLI", () => {
  it("runs train-lm with the documented flags", async () => {
    const out = tmp();
    const code = await main(["train-lm", "--steps", "3", "--dim", "16", "--depth", "1", "--heads", "2", "--dim-head", "8", "--batch", "2", "--seq", "16", "--lr", "0.01", "--eval-every", "3", "--sample-every", "3", "--sample-tokens", "4", "--seed", "3", "--out", out, "--quiet"]);
    expect(code).toBe(0);
    expect(existsSync(join(out, "checkpoint.safetensors"))).toBe(true);
    expect(existsSync(join(out, "loss.svg"))).toBe(true);
    const ck = await loadCheckpoint(join(out, "checkpoint.safetensors"));
    expect(ck.step).toBe(3);
    expect((ck.config as { dim: number }).dim).toBe(16);
    expect((ck.extra as { run: { seed: number; lr: number } }).run).toMatchObject({ seed: 3, lr: 0.01 });
  });

  it("parses options into trainLm's, and rejects bad values with a usage error", async () => {
    let got: TrainLmOptions | null = null;
    const capture = async (o: TrainLmOptions): Promise<void> => {
      got = o;
    };
    expect(await main(["train-lm", "--text", "a.txt", "--device", "cpu", "--steps", "5", "--resume", "ck", "--eval-every", "2", "--sample-every", "0"], capture)).toBe(0);
    expect(got).toMatchObject({ text: "a.txt", device: "cpu", steps: 5, resume: "ck", evalEvery: 2, sampleEvery: 0 });
    const stderr = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write; // keep commander's usage text out of the test log
    try {
      expect(await main(["train-lm", "--steps", "zero"], capture)).toBe(1);
      expect(await main(["train-lm", "--device", "tpu"], capture)).toBe(1);
      expect(await main(["train-lm", "--lr", "-1"], capture)).toBe(1);
    } finally {
      process.stderr.write = stderr;
    }
  });
});

describe("loss plot", () => {
  it("nice ticks are round numbers covering the range", () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(2.13, 5.6, 6)).toEqual([2.5, 3, 3.5, 4, 4.5, 5, 5.5]);
  });
  it("escapes text and places points inside the plot area", () => {
    const svg = lossCurveSvg(
      [
        [1, 5],
        [2, 4],
        [3, 3],
      ],
      [[3, 3.5]],
      { title: "a < b & c", width: 400, height: 300 },
    );
    expect(svg).toContain("a &lt; b &amp; c");
    const pts = /<polyline points="([^"]+)"/.exec(svg)![1]!.split(" ").map((p) => p.split(",").map(Number));
    for (const [x, y] of pts) {
      expect(x).toBeGreaterThanOrEqual(64);
      expect(x).toBeLessThanOrEqual(400 - 20);
      expect(y).toBeGreaterThanOrEqual(40);
      expect(y).toBeLessThanOrEqual(300 - 48);
    }
    // The first point (highest loss) is at the top, the last at the bottom.
    expect(pts[0]![1]!).toBeLessThan(pts[2]![1]!);
  });
});
