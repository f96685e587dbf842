/**
 * @file Tests of the RLHF pipeline (`webgrad rlhf`): the toy task's hidden rule, the config's
 * validation and JSON merge, the pipeline end to end on the tiny quick config (stage checkpoints,
 * resume skipping finished stages, the HTML report with plots and samples), and the CLI wiring.
 * Expected values come from outside the code under test: hidden scores counted by hand (or by plain
 * string counting of the decoded samples), identical models giving KL 0 and a win-rate of exactly 1/2,
 * and file contents checked structurally.
 */
import "../src/index.js";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ArgumentError } from "../src/autodiff/errors.js";
import { loadCheckpoint } from "../src/io/checkpoint.js";
import { main } from "../src/cli/index.js";
import { parseSet, rlhfCommand } from "../src/cli/rlhf.js";
import { defaultConfig, loadConfigFile, quickConfig, resolveConfig, RlhfConfigError } from "../src/rl/config.js";
import { runRlhf } from "../src/rl/pipeline.js";
import type { RlhfOptions } from "../src/rl/pipeline.js";
import { decode, encode, ToyTask, VOCAB_SIZE } from "../src/rl/task.js";

const tmp = (): string => mkdtempSync(join(tmpdir(), "webgrad-rlhf-"));

/** The hidden score of a decoded response, by plain string counting (independent of ToyTask.score). */
const countScore = (response: string, hidden = "aeio"): number => {
  const body = response.split("$")[0]!.split("_")[0]!;
  return body.length === 0 ? 0 : [...body].filter((c) => hidden.includes(c)).length / body.length;
};

describe("toy task", () => {
  const task = new ToyTask();
  it("scores the fraction of hidden letters up to eos (hand-counted)", () => {
    expect(VOCAB_SIZE).toBe(20);
    expect(task.score(encode("aebc$"))).toBe(0.5);
    expect(task.score(encode("aeio$aaaa"))).toBe(1);
    expect(task.score(encode("bcdfghjk"))).toBe(0);
    expect(task.score(encode("$"))).toBe(0);
    expect(task.score(encode("obb_"))).toBeCloseTo(1 / 3, 12);
    expect(decode(encode("^abc>abca$_"))).toBe("^abc>abca$_");
    expect(() => encode("xyz")).toThrow(ArgumentError);
  });

  it("labels preference pairs by the hidden rule, and keeps held-out prompts disjoint", () => {
    const train = task.prompts(1, 200);
    const held = task.prompts(2, 100, new Set(train.map((p) => p.join(","))));
    const trainSet = new Set(train.map((p) => p.join(",")));
    expect(held.some((p) => trainSet.has(p.join(",")))).toBe(false);
    for (const p of [...train, ...held]) {
      const s = decode(p);
      expect(s).toMatch(/^\^[a-p]{3,5}>$/);
    }
    const pairs = task.preferencePairs(train, 3, 300);
    for (const pr of pairs) {
      const c = countScore(decode(pr.chosen));
      const r = countScore(decode(pr.rejected));
      expect(c).toBeGreaterThan(r);
      expect(pr.margin).toBeCloseTo(c - r, 12);
    }
    // Demonstrations echo the prompt: with copyProb 0.7 about 70% + 30%/16 of letters copy it.
    const demos = task.demonstrations(train, 4);
    const echo = demos.reduce((a, d) => a + task.echoRate(d.tokens.slice(0, d.promptLength), d.tokens.slice(d.promptLength)), 0) / demos.length;
    expect(echo).toBeGreaterThan(0.6);
    expect(echo).toBeLessThan(0.82);
    // ... and cover the hidden rule only weakly (4 of 16 letters: about 0.25).
    const base = demos.reduce((a, d) => a + task.score(d.tokens.slice(d.promptLength)), 0) / demos.length;
    expect(base).toBeGreaterThan(0.15);
    expect(base).toBeLessThan(0.35);
  });
});

describe("rlhf config", () => {
  it("merges a partial config over the defaults", () => {
    const c = resolveConfig({ ppo: { klCoef: 0.5 }, model: { dim: 48 } });
    expect(c.ppo.klCoef).toBe(0.5);
    expect(c.ppo.clipEps).toBe(defaultConfig.ppo.clipEps);
    expect(c.model.dim).toBe(48);
    expect(c.model.depth).toBe(defaultConfig.model.depth);
    expect(resolveConfig({ ppo: { adaptiveKl: { target: 3, horizon: 1000 } } }).ppo.adaptiveKl).toEqual({ target: 3, horizon: 1000 });
    expect(resolveConfig({ ppo: { rewardClip: 5 } }).ppo.rewardClip).toBe(5);
  });

  it("names unknown keys and bad values", () => {
    const err = (p: unknown): string => {
      try {
        resolveConfig(p);
      } catch (e) {
        expect(e).toBeInstanceOf(RlhfConfigError);
        return (e as Error).message;
      }
      throw new Error("expected a config error");
    };
    expect(err({ ppo: { clipEps: 2 } })).toContain("ppo.clipEps: must be a number in (0, 1), got 2");
    expect(err({ ppo: { klcoef: 0.1 } })).toMatch(/ppo\.klcoef: unknown key[\s\S]*Tip: the keys of ppo are .*klCoef/);
    expect(err({ sfft: {} })).toContain("sfft: unknown key");
    expect(err({ model: 3 })).toContain("model: must be an object, got 3");
    expect(err({ model: { dimHead: 7 } })).toContain("model.dimHead: must be even");
    expect(err({ reward: { pooling: "max" } })).toContain('reward.pooling: must be one of "mean", "last", got "max"');
    expect(err({ ppo: { adaptiveKl: { target: 3 } } })).toContain("ppo.adaptiveKl.horizon: missing");
    expect(err({ ppo: { whitenAdvantages: "yes" } })).toContain("ppo.whitenAdvantages: must be true or false");
    expect(err({ ppo: { minibatchSize: 1000 } })).toContain("ppo.minibatchSize: must be <= ppo.rolloutBatch");
    expect(err({ task: { hiddenLetters: "xyz" } })).toContain("hiddenLetters");
    expect(err({ seed: -1, sft: { steps: 1.5 } })).toMatch(/2 problems:[\s\S]*seed: must be an integer[\s\S]*sft\.steps: must be an integer/);
  });

  it("reads JSON files (partial, merged) with named errors for bad files", async () => {
    const dir = tmp();
    const good = join(dir, "good.json");
    writeFileSync(good, JSON.stringify({ seed: 7, reward: { steps: 3 } }));
    const c = await loadConfigFile(good, quickConfig);
    expect(c.seed).toBe(7);
    expect(c.reward.steps).toBe(3);
    expect(c.sft.steps).toBe(quickConfig.sft.steps);
    writeFileSync(join(dir, "bad.json"), "{ seed: 1 ");
    await expect(loadConfigFile(join(dir, "bad.json"))).rejects.toThrow(/must be JSON/);
    writeFileSync(join(dir, "list.json"), "[1]");
    await expect(loadConfigFile(join(dir, "list.json"))).rejects.toThrow(/must hold a JSON object/);
    await expect(loadConfigFile(join(dir, "missing.json"))).rejects.toThrow(RlhfConfigError);
  });
});

describe("runRlhf (quick config)", () => {
  it("runs SFT → RM → PPO, writes the report, and resumes finished stages", async () => {
    const out = tmp();
    const a = await runRlhf({ quick: true, out, quiet: true });
    expect(a.stages).toEqual({ sft: "run", reward: "run", ppo: "run" });
    for (const f of ["sft.safetensors", "reward.safetensors", "ppo.safetensors", "report.html", "summary.json", "config.json"]) expect(existsSync(join(out, f))).toBe(true);
    const s = a.summary!;
    expect(s.prompts).toBe(quickConfig.eval.prompts);
    expect(s.winRate).toBeGreaterThanOrEqual(0);
    expect(s.winRate).toBeLessThanOrEqual(1);
    expect(Number.isFinite(s.kl)).toBe(true);
    expect(a.report!.ppo!.iterations.length).toBe(quickConfig.ppo.iterations);
    expect(a.report!.reward!.loss.length).toBe(quickConfig.reward.steps);
    expect(a.report!.sft!.loss.length).toBe(quickConfig.sft.steps);

    // The report: self-contained, with every plot, the summary, and the samples before / after.
    const html = readFileSync(a.reportPath!, "utf8");
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).not.toMatch(/<script|<link|src="http/);
    for (const id of ["plot-sft-loss", "plot-rm-loss", "plot-rm-accuracy", "plot-ppo-reward", "plot-ppo-score", "plot-ppo-kl", "plot-ppo-losses"]) expect(html).toContain(`id="${id}"`);
    expect((html.match(/<svg /g) ?? []).length).toBeGreaterThanOrEqual(7);
    expect(html).toContain("win-rate of PPO over SFT");
    expect(a.report!.samples.length).toBe(quickConfig.eval.shownSamples);
    const esc = (t: string): string => t.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
    for (const row of a.report!.samples) {
      expect(html).toContain(esc(row.prompt));
      expect(html).toContain(esc(row.sft));
      expect(html).toContain(esc(row.ppo));
      // The hidden scores shown are the fraction of a/e/i/o letters of the shown text.
      expect(row.sftScore).toBeCloseTo(countScore(row.sft), 12);
      expect(row.ppoScore).toBeCloseTo(countScore(row.ppo), 12);
    }
    const sftCk = await loadCheckpoint(join(out, "sft.safetensors"));
    expect((sftCk.extra as { stage: string }).stage).toBe("sft");

    // Rerun: every stage resumes from its checkpoint (no training), same evaluation.
    const mtime = statSync(join(out, "sft.safetensors")).mtimeMs;
    const b = await runRlhf({ quick: true, out, quiet: true });
    expect(b.stages).toEqual({ sft: "resumed", reward: "resumed", ppo: "resumed" });
    expect(statSync(join(out, "sft.safetensors")).mtimeMs).toBe(mtime);
    expect(b.summary).toEqual(a.summary);
    expect(b.report!.ppo).toEqual(a.report!.ppo);

    // A changed PPO section reruns PPO only; a changed SFT section reruns everything.
    const c = await runRlhf({ quick: true, out, quiet: true, config: { ppo: { klCoef: 0.2 } } });
    expect(c.stages).toEqual({ sft: "resumed", reward: "resumed", ppo: "run" });
    const d = await runRlhf({ quick: true, out, quiet: true, config: { sft: { steps: 5 } }, stopAfter: "reward" });
    expect(d.stages).toEqual({ sft: "run", reward: "run", ppo: "not run" });
  }, 60_000);

  it("stops after a stage and continues from it; an untrained policy has KL 0 and win-rate 1/2", async () => {
    const out = tmp();
    const a = await runRlhf({ quick: true, out, quiet: true, stopAfter: "sft" });
    expect(a.stages).toEqual({ sft: "run", reward: "not run", ppo: "not run" });
    expect(existsSync(join(out, "reward.safetensors"))).toBe(false);
    // PPO with 0 iterations: the policy is the SFT model, sampled with the same key.
    const b = await runRlhf({ quick: true, out, quiet: true, config: { ppo: { iterations: 0 } } });
    expect(b.stages).toEqual({ sft: "resumed", reward: "run", ppo: "run" });
    expect(b.summary!.kl).toBe(0);
    expect(b.summary!.winRate).toBe(0.5);
    expect(b.summary!.ppoScore).toBe(b.summary!.sftScore);
    // --fresh ignores the checkpoints.
    const c = await runRlhf({ quick: true, out, quiet: true, fresh: true, stopAfter: "sft" });
    expect(c.stages.sft).toBe("run");
  }, 60_000);
});

describe("runRlhf: interrupted stages", () => {
  it("continues an interrupted stage from its partial checkpoint, reproducing the uninterrupted run exactly", async () => {
    const config = { sft: { checkpointEvery: 4 }, reward: { checkpointEvery: 3 }, ppo: { checkpointEvery: 1 } };
    const ref = await runRlhf({ quick: true, out: tmp(), quiet: true, config });
    const out = tmp();
    const stopAt = (stage: string, step: number) => (s: string, i: number) => s === stage && i === step;
    const a = await runRlhf({ quick: true, out, quiet: true, config, interrupt: stopAt("sft", 6) });
    expect(a.stages.sft).toBe("interrupted");
    expect(a.summary).toBeNull();
    expect(existsSync(join(out, "sft.partial.safetensors"))).toBe(true);
    expect(existsSync(join(out, "sft.safetensors"))).toBe(false);
    const b = await runRlhf({ quick: true, out, quiet: true, config, interrupt: stopAt("reward", 5) });
    expect(b.stages).toEqual({ sft: "run", reward: "interrupted", ppo: "not run" });
    expect(existsSync(join(out, "sft.partial.safetensors"))).toBe(false); // removed once the stage finished
    const c = await runRlhf({ quick: true, out, quiet: true, config, interrupt: stopAt("ppo", 2) });
    expect(c.stages).toEqual({ sft: "resumed", reward: "run", ppo: "interrupted" });
    const d = await runRlhf({ quick: true, out, quiet: true, config });
    expect(d.stages).toEqual({ sft: "resumed", reward: "resumed", ppo: "run" });
    expect(existsSync(join(out, "ppo.partial.safetensors"))).toBe(false);
    // Bit for bit (CPU): the same losses, accuracies, PPO statistics and final evaluation.
    expect(d.report!.sft!.loss).toEqual(ref.report!.sft!.loss);
    expect(d.report!.reward!.loss).toEqual(ref.report!.reward!.loss);
    expect(d.report!.reward!.heldOutAccuracy).toEqual(ref.report!.reward!.heldOutAccuracy);
    expect(d.report!.ppo!.iterations).toEqual(ref.report!.ppo!.iterations);
    expect(d.report!.ppo!.heldOutScore).toEqual(ref.report!.ppo!.heldOutScore);
    expect(d.summary).toEqual(ref.summary);
  }, 60_000);

  it("does the same with LoRA adapters for the reward model and the policy", async () => {
    const config = { reward: { loraR: 4, checkpointEvery: 0 }, ppo: { loraR: 4, checkpointEvery: 0 } };
    const ref = await runRlhf({ quick: true, out: tmp(), quiet: true, config });
    const out = tmp();
    const a = await runRlhf({ quick: true, out, quiet: true, config, interrupt: (s, i) => (s === "reward" && i === 3) || (s === "ppo" && i === 1) });
    expect(a.stages.reward).toBe("interrupted");
    const b = await runRlhf({ quick: true, out, quiet: true, config, interrupt: (s, i) => s === "ppo" && i === 1 });
    expect(b.stages).toEqual({ sft: "resumed", reward: "run", ppo: "interrupted" });
    const c = await runRlhf({ quick: true, out, quiet: true, config });
    expect(c.stages).toEqual({ sft: "resumed", reward: "resumed", ppo: "run" });
    expect(c.report!.reward!.loss).toEqual(ref.report!.reward!.loss);
    expect(c.report!.ppo!.iterations).toEqual(ref.report!.ppo!.iterations);
    expect(c.summary).toEqual(ref.summary);
    expect(c.policy!.lora).not.toBeNull();
  }, 60_000);
});

describe("webgrad rlhf (CLI)", () => {
  it("maps options onto runRlhf", async () => {
    let got: RlhfOptions | null = null;
    const cmd = rlhfCommand(async (o) => {
      got = o;
    });
    cmd.exitOverride();
    await cmd.parseAsync(["--quick", "--out", "x", "--seed", "3", "--stop-after", "reward", "--set", "ppo.klCoef=0.2", "--set", "task.hiddenLetters=ab", "--no-progress"], { from: "user" });
    expect(got).toMatchObject({ quick: true, out: "x", stopAfter: "reward", device: "cpu", progress: false, config: { seed: 3, ppo: { klCoef: 0.2 }, task: { hiddenLetters: "ab" } } });
    expect(parseSet("ppo.adaptiveKl={\"target\":2,\"horizon\":100}")).toEqual({ ppo: { adaptiveKl: { target: 2, horizon: 100 } } });
    expect(() => parseSet("novalue")).toThrow(/path=value/);
  });

  it("reports config errors with exit code 1", async () => {
    const errs: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (errs.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await main(["rlhf", "--quick", "--set", "ppo.nope=1", "--print-config"])).toBe(1);
    } finally {
      process.stderr.write = write;
    }
    expect(errs.join("")).toContain("ppo.nope: unknown key");
  });
});
