/**
 * @file The performance figures of the RLHF main job (issue 6): runs `webgrad rlhf` with the default
 * config from scratch (a fresh temporary output directory, so no stage is resumed) and reports
 *  - rollout tokens/s: response tokens sampled per second of PPO rollout collection (KV-cached
 *    generation, then the policy / reference / reward-model forward passes over the sequences),
 *  - PPO update tokens/s: epochs · batch · sequence length per second of `ppoUpdate`,
 *  - reward-model training pairs/s: preference pairs per second of RM training steps,
 *  - SFT training tokens/s, and the wall time of each stage and of the whole job.
 * The first step / iteration of each stage (tracing, compilation) is not in the rates; the wall time
 * includes everything (also the held-out evaluations and the report).
 *
 * Run: `npx tsx bench/rlhf.ts [--device cpu|webgpu] [--quick] [--json] [--set key=value ...]`.
 * Figures depend on the machine and on its load: say which machine (cores, other work) with them.
 */
import os from "node:os";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseSet } from "../src/cli/rlhf.js";
import { runRlhf } from "../src/rl/pipeline.js";
import { terminalTable } from "../src/rl/report.js";

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const arg = (name: string, fallback: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1]! : fallback;
};
const device = arg("device", "cpu") as "cpu" | "webgpu";
const partial: Record<string, unknown> = {};
argv.forEach((a, i) => {
  if (a === "--set" && argv[i + 1]) parseSet(argv[i + 1]!, partial);
});

const out = mkdtempSync(join(tmpdir(), "webgrad-bench-rlhf-"));
const t0 = performance.now();
try {
  const r = await runRlhf({ device, quick: flag("quick"), out, fresh: true, config: partial, quiet: true, progress: false });
  const wall = (performance.now() - t0) / 1000;
  const rep = r.report;
  if (!rep) throw new Error("bench/rlhf: the run was interrupted");
  const figures = {
    device: rep.device,
    cpus: os.cpus().length,
    config: flag("quick") ? "quick" : "default",
    rolloutTokensPerSecond: rep.ppo?.rolloutTokensPerSecond ?? NaN,
    ppoUpdateTokensPerSecond: rep.ppo?.updateTokensPerSecond ?? NaN,
    rewardModelPairsPerSecond: rep.reward?.pairsPerSecond ?? NaN,
    sftTokensPerSecond: rep.sft?.tokensPerSecond ?? NaN,
    sftSeconds: rep.sft?.seconds ?? NaN,
    rewardSeconds: rep.reward?.seconds ?? NaN,
    ppoSeconds: rep.ppo?.seconds ?? NaN,
    wallSeconds: wall,
    sftScore: r.summary?.sftScore ?? NaN,
    ppoScore: r.summary?.ppoScore ?? NaN,
    winRate: r.summary?.winRate ?? NaN,
    kl: r.summary?.kl ?? NaN,
    rmAccuracy: r.summary?.rmAccuracy ?? NaN,
  };
  if (flag("json")) {
    process.stdout.write(JSON.stringify(figures, null, 2) + "\n");
  } else {
    const f = (x: number, d = 0): string => (Number.isFinite(x) ? x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : String(x));
    const rows: [string, string][] = [
      ["device", `${figures.device} (${figures.cpus} CPUs)`],
      ["config", figures.config],
      ["rollout tokens/s", f(figures.rolloutTokensPerSecond)],
      ["PPO update tokens/s", f(figures.ppoUpdateTokensPerSecond)],
      ["reward-model pairs/s", f(figures.rewardModelPairsPerSecond)],
      ["SFT tokens/s", f(figures.sftTokensPerSecond)],
      ["stage times (s)", `SFT ${f(figures.sftSeconds, 1)}, RM ${f(figures.rewardSeconds, 1)}, PPO ${f(figures.ppoSeconds, 1)}`],
      ["main job wall time (s)", f(figures.wallSeconds, 1)],
    ];
    const w = Math.max(...rows.map((x) => x[0].length));
    process.stdout.write(terminalTable(rep) + "\n\nbench/rlhf.ts\n" + rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join("\n") + "\n");
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}
