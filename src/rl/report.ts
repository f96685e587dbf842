/**
 * @file The outputs of `webgrad rlhf` for people: a self-contained HTML report (inline SVG plots of
 * every stage's curves, the summary table, sample generations before and after PPO, the config) and
 * the short summary table printed in the terminal. Pure functions of the pipeline's history
 * (`RlhfReportData`), so a resumed run re-renders the same report from its checkpoints.
 *
 * Read first: `RlhfReportData` (what the pipeline hands over), then `renderReport`.
 */
import { ema, escapeXml, plotSvg, Series } from "../cli/plot.js";
import type { RlhfConfig } from "./config.js";

/** SFT history: the masked next-token loss on the demonstrations' responses. */
export interface SftHistory {
  loss: number[];
  /** Loss on held-out demonstrations (prompts never trained on). */
  heldOutLoss: number;
  seconds: number;
  tokensPerSecond: number;
}

export interface RewardHistory {
  /** Bradley–Terry loss and batch accuracy per step. */
  loss: number[];
  trainAccuracy: number[];
  /** [step, pairwise accuracy on held-out pairs]. */
  heldOutAccuracy: [number, number][];
  finalAccuracy: number;
  seconds: number;
  pairsPerSecond: number;
}

/** One PPO iteration's numbers (names as ppoUpdate's stats, plus the rollout's). */
export type PpoIterationStats = Record<string, number>;

export interface PpoHistory {
  iterations: PpoIterationStats[];
  /** [iteration, mean hidden score of the policy's samples on held-out prompts]. */
  heldOutScore: [number, number][];
  seconds: number;
  rolloutTokensPerSecond: number;
  updateTokensPerSecond: number;
}

/** One held-out prompt: the SFT and the PPO model's samples, with hidden scores and RM rewards. */
export interface SampleRow {
  prompt: string;
  sft: string;
  sftScore: number;
  sftReward: number;
  ppo: string;
  ppoScore: number;
  ppoReward: number;
}

/** The final held-out evaluation of SFT vs PPO (the numbers the main job is about). */
export interface RlhfSummary {
  /** Mean hidden score of samples on held-out prompts. */
  sftScore: number;
  ppoScore: number;
  /** Standard errors of those means. */
  sftScoreStderr: number;
  ppoScoreStderr: number;
  /** P(PPO sample scores higher than the SFT sample for the same prompt), ties counting half. */
  winRate: number;
  /** Mean sequence KL(PPO || SFT) on held-out prompts (k1 estimate on PPO samples, nats). */
  kl: number;
  /** Mean reward-model score of the samples. */
  sftReward: number;
  ppoReward: number;
  /** Fraction of response letters copying the prompt (the visible skill SFT learnt). */
  sftEcho: number;
  ppoEcho: number;
  /** Held-out pairwise accuracy of the reward model. */
  rmAccuracy: number;
  /** Held-out prompts evaluated. */
  prompts: number;
}

export interface RlhfReportData {
  config: RlhfConfig;
  device: string;
  sft: SftHistory | null;
  reward: RewardHistory | null;
  ppo: PpoHistory | null;
  summary: RlhfSummary | null;
  samples: SampleRow[];
  /** Stage -> "run" (this invocation) or "resumed" (from its checkpoint). */
  stages: Record<string, "run" | "resumed" | "not run" | "interrupted">;
  /** Wall time of this invocation, seconds. */
  wallSeconds: number;
}

const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : String(x));
const pct = (x: number): string => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : String(x));

/** The rows of the summary table: [what, value]. */
export function summaryRows(d: RlhfReportData): [string, string][] {
  const rows: [string, string][] = [];
  const s = d.summary;
  if (d.sft) rows.push(["SFT loss (held-out demos)", f3(d.sft.heldOutLoss)]);
  if (d.reward) rows.push(["RM pairwise accuracy (held-out)", pct(d.reward.finalAccuracy)]);
  if (s) {
    rows.push(["hidden score, SFT samples (held-out)", `${f3(s.sftScore)} ± ${f3(s.sftScoreStderr)}`]);
    if (d.ppo) {
      rows.push(["hidden score, PPO samples (held-out)", `${f3(s.ppoScore)} ± ${f3(s.ppoScoreStderr)}`]);
      rows.push(["win-rate of PPO over SFT", pct(s.winRate)]);
      rows.push(["KL(PPO || SFT) per response (nats)", f3(s.kl)]);
      rows.push(["RM reward, SFT → PPO", `${f3(s.sftReward)} → ${f3(s.ppoReward)}`]);
      rows.push(["echo rate (visible skill), SFT → PPO", `${pct(s.sftEcho)} → ${pct(s.ppoEcho)}`]);
    }
    rows.push(["held-out prompts", String(s.prompts)]);
  }
  const t: string[] = [];
  if (d.sft) t.push(`SFT ${d.sft.seconds.toFixed(1)}s`);
  if (d.reward) t.push(`RM ${d.reward.seconds.toFixed(1)}s`);
  if (d.ppo) t.push(`PPO ${d.ppo.seconds.toFixed(1)}s`);
  if (t.length) rows.push(["stage times", t.join(", ")]);
  rows.push(["wall time (this run)", `${d.wallSeconds.toFixed(1)}s`]);
  return rows;
}

/** The summary as a boxed text table for the terminal. */
export function terminalTable(d: RlhfReportData): string {
  const rows = summaryRows(d);
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  const line = `+${"-".repeat(w0 + 2)}+${"-".repeat(w1 + 2)}+`;
  return [line, ...rows.map(([a, b]) => `| ${a.padEnd(w0)} | ${b.padEnd(w1)} |`), line].join("\n");
}

/** A few held-out samples before / after PPO as text lines for the terminal. */
export function terminalSamples(d: RlhfReportData, n = 4): string {
  const rows = d.samples.slice(0, n);
  if (rows.length === 0 || !d.ppo) return "";
  const w = Math.max(...rows.map((r) => r.prompt.length));
  const w2 = Math.max(...rows.map((r) => r.sft.length));
  return [
    `samples on held-out prompts (hidden score): ${"prompt".padEnd(w)}  SFT → PPO`,
    ...rows.map((r) => `  ${r.prompt.padEnd(w)}  ${r.sft.padEnd(w2)} (${r.sftScore.toFixed(2)})  →  ${r.ppo} (${r.ppoScore.toFixed(2)})`),
  ].join("\n");
}

const pts = (ys: readonly number[], x0 = 1): [number, number][] => ys.map((y, i) => [i + x0, y]);
const col = (its: readonly PpoIterationStats[], k: string): [number, number][] => its.map((s, i) => [i + 1, s[k] ?? NaN]);
const has = (its: readonly PpoIterationStats[], k: string): boolean => its.some((s) => Number.isFinite(s[k]));

/** Every plot of the report, as [id, title, svg]. */
export function reportPlots(d: RlhfReportData): [string, string, string][] {
  const out: [string, string, string][] = [];
  const size = { width: 560, height: 320, legend: "bottom-right" as const };
  if (d.sft) {
    const train = pts(d.sft.loss);
    out.push([
      "plot-sft-loss",
      "SFT loss",
      plotSvg(
        [
          { name: "train loss", points: train, color: "#1f77b4", opacity: 0.3, width: 1 },
          { name: "train (EMA)", points: ema(train), color: "#1f77b4", width: 2 },
        ],
        { title: "SFT: response loss", xLabel: "step", yLabel: "nats / token", ...size, legend: "top-right" },
      ),
    ]);
  }
  if (d.reward) {
    const l = pts(d.reward.loss);
    out.push([
      "plot-rm-loss",
      "Reward model loss",
      plotSvg(
        [
          { name: "Bradley–Terry loss", points: l, color: "#9467bd", opacity: 0.3, width: 1 },
          { name: "loss (EMA)", points: ema(l), color: "#9467bd", width: 2 },
        ],
        { title: "Reward model: loss", xLabel: "step", yLabel: "loss", ...size, legend: "top-right" },
      ),
    ]);
    const acc: Series[] = [
      { name: "batch accuracy (EMA)", points: ema(pts(d.reward.trainAccuracy)), color: "#8c564b", width: 1.5 },
      { name: "held-out accuracy", points: d.reward.heldOutAccuracy, color: "#d62728", style: "markers" },
      { name: "chance", points: [[1, 0.5], [Math.max(2, d.reward.loss.length), 0.5]], color: "#999999", width: 1 },
    ];
    out.push(["plot-rm-accuracy", "Reward model accuracy", plotSvg(acc, { title: "Reward model: pairwise accuracy", xLabel: "step", yLabel: "accuracy", ...size })]);
  }
  if (d.ppo && d.ppo.iterations.length > 0) {
    const its = d.ppo.iterations;
    const rs: Series[] = [];
    if (has(its, "reward")) rs.push({ name: "RM reward (rollouts)", points: col(its, "reward"), color: "#2ca02c", width: 2 });
    out.push(["plot-ppo-reward", "PPO reward", plotSvg(rs, { title: "PPO: reward-model score of rollouts", xLabel: "iteration", yLabel: "reward", ...size })]);
    const hs: Series[] = [{ name: "hidden score (rollouts)", points: col(its, "hiddenScore"), color: "#ff7f0e", width: 1.5, opacity: 0.6 }];
    if (d.ppo.heldOutScore.length) hs.push({ name: "hidden score (held-out)", points: d.ppo.heldOutScore, color: "#d62728", style: "markers" });
    out.push(["plot-ppo-score", "Hidden score", plotSvg(hs, { title: "PPO: hidden rule's score (never seen by the policy)", xLabel: "iteration", yLabel: "score", ...size })]);
    const ks: Series[] = [{ name: "KL to SFT (per response)", points: col(its, "kl"), color: "#17becf", width: 2 }];
    out.push(["plot-ppo-kl", "KL", plotSvg(ks, { title: "PPO: KL divergence", xLabel: "iteration", yLabel: "nats", ...size })]);
    const ls: Series[] = [];
    const colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"];
    ["policyLoss", "valueLoss", "clipFrac"].forEach((k, i) => {
      if (has(its, k)) ls.push({ name: k, points: col(its, k), color: colors[i]!, width: 1.5 });
    });
    out.push([
      "plot-ppo-entropy",
      "Policy entropy",
      plotSvg([{ name: "entropy (per token)", points: col(its, "entropy"), color: "#2ca02c", width: 2 }], { title: "PPO: policy entropy", xLabel: "iteration", yLabel: "nats", ...size }),
    ]);
    out.push(["plot-ppo-losses", "PPO losses", plotSvg(ls, { title: "PPO: losses and diagnostics", xLabel: "iteration", yLabel: "value", ...size, legend: "top-right" })]);
  }
  return out;
}

/** The self-contained HTML report (no external resources). */
export function renderReport(d: RlhfReportData): string {
  const rows = summaryRows(d)
    .map(([k, v]) => `<tr><th>${escapeXml(k)}</th><td>${escapeXml(v)}</td></tr>`)
    .join("\n");
  const plots = reportPlots(d)
    .map(([id, title, svg]) => `<figure id="${id}"><figcaption>${escapeXml(title)}</figcaption>\n${svg}\n</figure>`)
    .join("\n");
  const samples = d.samples.length
    ? `<table class="samples"><tr><th>prompt</th><th>SFT sample</th><th>hidden score</th><th>RM reward</th><th>PPO sample</th><th>hidden score</th><th>RM reward</th></tr>\n${d.samples
        .map(
          (s) =>
            `<tr><td><code>${escapeXml(s.prompt)}</code></td><td><code>${escapeXml(s.sft)}</code></td><td>${f3(s.sftScore)}</td><td>${f3(s.sftReward)}</td>` +
              `<td><code>${escapeXml(s.ppo)}</code></td><td>${f3(s.ppoScore)}</td><td>${f3(s.ppoReward)}</td></tr>`,
        )
        .join("\n")}</table>`
    : "<p>(no samples)</p>";
  const stages = Object.entries(d.stages)
    .map(([k, v]) => `${escapeXml(k)}: ${escapeXml(v)}`)
    .join(", ");
  const hidden = escapeXml(d.config.task.hiddenLetters.split("").join(", "));
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>webgrad rlhf report</title>
<style>
body{font-family:sans-serif;margin:2em;max-width:75em;color:#222}
th{text-align:left;padding-right:1em}td{padding-right:1em}
figure{display:inline-block;margin:.5em}figcaption{font-weight:bold}
table.samples td,table.samples th{border-bottom:1px solid #ddd;padding:.2em .6em}
code{font-size:1.05em}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}
</style>
</head><body>
<h1>webgrad rlhf: SFT → reward model → PPO</h1>
<p>A tiny PaLM is fine-tuned on demonstrations (echo the prompt's letters), a reward model learns
preferences labelled by a hidden rule (the fraction of response letters in {${hidden}}) that the policy
never sees, and PPO optimises the reward model's score with a KL penalty to the SFT model. Device:
${escapeXml(d.device)}. Stages: ${stages}.</p>
<h2>Summary</h2>
<table id="summary">
${rows}
</table>
<h2>Curves</h2>
${plots}
<h2>Samples on held-out prompts (before / after PPO)</h2>
<p>Format: <code>^</code> begins the prompt, <code>&gt;</code> ends it, <code>$</code> ends the response.</p>
${samples}
<h2>Config</h2>
<pre>${escapeXml(JSON.stringify(d.config, null, 2))}</pre>
</body></html>
`;
}
