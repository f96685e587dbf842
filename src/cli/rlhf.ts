/**
 * @file The `webgrad rlhf` subcommand: runs (or resumes) the RLHF pipeline of src/rl/pipeline.ts —
 * SFT → reward model → PPO on the embedded toy task — with progress bars, a summary table and an HTML
 * report. Every setting lives in one JSON config (src/rl/config.ts): `--config file.json` merges a
 * partial config over the defaults, `--set path=value` overrides single keys, `--print-config` shows
 * the result.
 *
 *   webgrad rlhf [--config cfg.json] [--quick] [--device cpu|webgpu] [--out dir] [--fresh]
 *                [--stop-after sft|reward|ppo] [--seed S] [--set ppo.klCoef=0.2 ...] [--print-config]
 *
 * Ctrl-C stops after the current step with the stage's progress saved; rerunning continues from it.
 * `registerRlhf(program)` adds it to the `webgrad` program (src/cli/index.ts).
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { configOf, runRlhf, STAGES } from "../rl/pipeline.js";
import type { RlhfOptions, Stage } from "../rl/pipeline.js";
import { RlhfConfigError } from "../rl/config.js";

/** Parses one `--set path=value` into a nested partial config (values are JSON when they parse, else strings). */
export function parseSet(assignment: string, into: Record<string, unknown> = {}): Record<string, unknown> {
  const eq = assignment.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`must be path=value (e.g. ppo.klCoef=0.2), got ${JSON.stringify(assignment)}`);
  const path = assignment.slice(0, eq).trim().split(".");
  const raw = assignment.slice(eq + 1).trim();
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  if (path.some((k) => k === "" || k === "__proto__" || k === "constructor" || k === "prototype")) {
    throw new InvalidArgumentError(`must be a dotted key path, got ${JSON.stringify(assignment.slice(0, eq))}`);
  }
  let node = into;
  path.slice(0, -1).forEach((k) => {
    const next = node[k];
    if (typeof next !== "object" || next === null || globalThis.Array.isArray(next)) node[k] = {};
    node = node[k] as Record<string, unknown>;
  });
  node[path.at(-1)!] = value;
  return into;
}

const seedArg = (v: string): number => {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(`must be an integer >= 0, got ${JSON.stringify(v)}`);
  return n;
};

/** The RlhfOptions of parsed command-line options. */
export function rlhfOptionsFrom(o: Record<string, unknown>): RlhfOptions {
  const partial: Record<string, unknown> = {};
  for (const s of (o.set as string[] | undefined) ?? []) parseSet(s, partial);
  if (o.seed !== undefined) partial.seed = o.seed;
  return {
    configFile: o.config as string | undefined,
    config: partial,
    quick: o.quick === true,
    device: o.device as "cpu" | "webgpu",
    out: o.out as string,
    fresh: o.fresh === true,
    stopAfter: o.stopAfter as Stage | undefined,
    quiet: o.quiet === true,
    progress: o.progress === false ? false : undefined,
  };
}

/** The `rlhf` command (not attached to a program); `run` is the pipeline (injectable for tests). */
export function rlhfCommand(run: (o: RlhfOptions) => Promise<unknown> = runRlhf): Command {
  return new Command("rlhf")
    .description("RLHF on the embedded toy task: SFT → reward model → PPO, with a summary table and an HTML report (resumes finished stages)")
    .option("--config <file>", "JSON config file (a partial config merged over the defaults)")
    .option("--quick", "start from the tiny quick config (seconds; a smoke test, not a demonstration)")
    .addOption(new Option("--device <device>", "where to compute").choices(["cpu", "webgpu"]).default("cpu"))
    .option("--out <dir>", "output directory: stage checkpoints, report.html, summary.json, config.json", "rlhf-out")
    .option("--fresh", "ignore existing stage checkpoints in --out and run every stage")
    .addOption(new Option("--stop-after <stage>", "stop after this stage (a rerun continues)").choices([...STAGES]))
    .option("--seed <s>", "random seed (config key seed)", seedArg)
    .option("--set <path=value>", "override one config key, e.g. --set ppo.klCoef=0.2 (repeatable)", (v: string, prev: string[] = []) => [...prev, v])
    .option("--print-config", "print the resolved config as JSON and exit")
    .option("--quiet", "no log lines and no progress bars")
    .option("--no-progress", "no progress bars")
    .action(async (o: Record<string, unknown>) => {
      const opts = rlhfOptionsFrom(o);
      if (o.printConfig === true) {
        process.stdout.write(JSON.stringify(await configOf(opts), null, 2) + "\n");
        return;
      }
      // Ctrl-C: finish the current step, save the stage's progress, stop (a rerun continues); twice: quit now.
      let stopRequested = false;
      const onSigint = (): void => {
        if (stopRequested) process.exit(130);
        stopRequested = true;
        process.stderr.write("\nrlhf: stopping after this step and saving progress (Ctrl-C again to quit now)\n");
      };
      process.on("SIGINT", onSigint);
      try {
        await run({ ...opts, interrupt: () => stopRequested });
      } finally {
        process.off("SIGINT", onSigint);
      }
    });
}

/** Adds `rlhf` to a commander program. */
export function registerRlhf(program: Command, run?: (o: RlhfOptions) => Promise<unknown>): Command {
  program.addCommand(rlhfCommand(run));
  return program;
}

export { RlhfConfigError };
