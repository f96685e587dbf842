#!/usr/bin/env node
/**
 * @file The `webgrad` command line: subcommands parsed with commander. `main(argv)` runs it (exported
 * for tests); the file runs `main` when executed directly (`npx tsx src/cli/index.ts train-lm ...`,
 * or the `webgrad` bin once built).
 *
 *   webgrad train-lm [--text file] [--device cpu|webgpu] [--steps N] [--dim D] [--depth L] [--batch B]
 *                    [--seq T] [--lr LR] [--out dir] [--resume ckpt] [--eval-every N] [--sample-every N]
 *                    [--seed S] ...   (webgrad train-lm --help lists them all)
 */
import { realpathSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { WebgradError } from "../autodiff/errors.js";
import { trainLm, TrainLmOptions } from "./train-lm.js";
import { registerRlhf } from "./rlhf.js";

const int =
  (min: number) =>
  (v: string): number => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
const num = (v: string): number => {
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`must be a number >= 0, got ${JSON.stringify(v)}`);
  return n;
};

/** The commander program (without running it). */
export function buildProgram(run: (o: TrainLmOptions) => Promise<unknown> = trainLm): Command {
  const program = new Command();
  program.name("webgrad").description("webgrad: functional autodiff in TypeScript — command-line tools").showHelpAfterError();
  program
    .command("train-lm")
    .description("train a small PaLM language model on a text file (default: the embedded corpus)")
    .option("--text <file>", "UTF-8 text file to train on (default: data/corpus.txt)")
    .addOption(new Option("--device <device>", "where to compute").choices(["cpu", "webgpu"]).default("cpu"))
    .option("--tokenizer <name>", 'tokenizer: "byte", "bpe" (GPT-2 BPE) or "bpe:<encoding>" (default: byte)')
    .option("--steps <n>", "total training steps (default: 300)", int(1))
    .option("--stop-at <n>", "stop after this step (the schedule still spans --steps); --resume continues", int(0))
    .option("--dim <n>", "model width (default: 64)", int(1))
    .option("--depth <n>", "layers (default: 2)", int(1))
    .option("--heads <n>", "query heads (default: 4)", int(1))
    .option("--dim-head <n>", "size of each head, even (default: 16)", int(2))
    .option("--ff-mult <n>", "feed-forward width / dim (default: 4)", int(1))
    .option("--batch <n>", "sequences per batch (default: 8)", int(1))
    .option("--seq <n>", "context length in tokens (default: 64)", int(1))
    .option("--lr <x>", "peak learning rate (default: 3e-3)", num)
    .option("--warmup <n>", "warm-up steps (default: min(50, steps/10))", int(0))
    .option("--weight-decay <x>", "AdamW weight decay on matrices (default: 0.01)", num)
    .option("--clip <x>", "gradient global-norm clip, 0 = off (default: 1)", num)
    .option("--val-fraction <x>", "fraction of the text held out (default: 0.1)", num)
    .option("--eval-every <n>", "validation loss every N steps (default: 50)", int(0))
    .option("--eval-batches <n>", "validation batches per evaluation (default: 4)", int(1))
    .option("--sample-every <n>", "sample generation every N steps (default: 100)", int(0))
    .option("--sample-tokens <n>", "tokens per sample (default: 100)", int(1))
    .option("--prompt <text>", 'sample prompt (default: "Mia had a ")')
    .option("--temperature <x>", "sampling temperature (default: 0.8)", num)
    .option("--top-k <n>", "sampling top-k (default: 20)", int(1))
    .option("--checkpoint-every <n>", "checkpoint every N steps (default: --eval-every)", int(0))
    .option("--out <dir>", "output directory: checkpoint.safetensors, loss.svg, loss.html, samples.txt", "train-lm-out")
    .option("--resume <ckpt>", "continue from a checkpoint")
    .option("--seed <s>", "random seed (default: 0)", int(0))
    .option("--quiet", "no log lines and no progress bar")
    .option("--no-progress", "no progress bar")
    .action(async (o: Record<string, unknown>) => {
      const opts: TrainLmOptions = {
        text: o.text as string | undefined,
        device: o.device as "cpu" | "webgpu",
        tokenizer: o.tokenizer as string | undefined,
        steps: o.steps as number | undefined,
        stopAt: o.stopAt as number | undefined,
        dim: o.dim as number | undefined,
        depth: o.depth as number | undefined,
        heads: o.heads as number | undefined,
        dimHead: o.dimHead as number | undefined,
        ffMult: o.ffMult as number | undefined,
        batch: o.batch as number | undefined,
        seq: o.seq as number | undefined,
        lr: o.lr as number | undefined,
        warmup: o.warmup as number | undefined,
        weightDecay: o.weightDecay as number | undefined,
        clip: o.clip as number | undefined,
        valFraction: o.valFraction as number | undefined,
        evalEvery: o.evalEvery as number | undefined,
        evalBatches: o.evalBatches as number | undefined,
        sampleEvery: o.sampleEvery as number | undefined,
        sampleTokens: o.sampleTokens as number | undefined,
        samplePrompt: o.prompt as string | undefined,
        temperature: o.temperature as number | undefined,
        topK: o.topK as number | undefined,
        checkpointEvery: o.checkpointEvery as number | undefined,
        out: o.out as string | undefined,
        resume: o.resume as string | undefined,
        seed: o.seed as number | undefined,
        quiet: o.quiet === true,
        progress: o.progress === false ? false : undefined,
      };
      await run(opts);
    });
  registerRlhf(program);
  return program;
}

/**
 * Parses `argv` (user arguments only, without node and the script) and runs the subcommand. Returns the
 * exit code instead of exiting: 0 on success (and for --help), 1 on a usage or webgrad error.
 */
export async function main(argv: readonly string[], run?: (o: TrainLmOptions) => Promise<unknown>): Promise<number> {
  const program = buildProgram(run);
  program.exitOverride();
  program.commands.forEach((c) => c.exitOverride());
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode;
    if (e instanceof WebgradError) {
      process.stderr.write(`webgrad: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

const isEntry = (() => {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
})();
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
