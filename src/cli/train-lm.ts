/**
 * @file `trainLm(options)`: trains a small PaLM language model on a text file (by default the embedded
 * corpus, data/corpus.txt) — the implementation of `webgrad train-lm`. This is one of the impure
 * modules (files, clock, terminal); the maths is the pure step `jit(valueAndGrad(loss)) + optimiser`.
 *
 * Read first: `trainLm` (setup, then the loop), `makeStep` (the jitted training step, params and
 * optimiser state donated so each step reuses their buffers).
 *
 * Determinism and exact resume: everything random derives from the seed's key by `foldIn` with fixed
 * numbers (init 0, data 1, samples 2, validation 3) and, for the data, the step number: batch s is the
 * same crop set whether a run got to s uninterrupted or resumed from a checkpoint. A checkpoint holds
 * params, optimiser state (including the schedule's step count), the step, the root key, the model
 * config, the training options and the loss history, bit-exact (safetensors F32/F64). So on CPU a
 * resumed run reproduces the uninterrupted run's losses bit for bit (tests/train-lm.test.ts).
 *
 * Outputs in `out` (when given): checkpoint.safetensors (written atomically, every `checkpointEvery`
 * steps and at the end), loss.svg and loss.html (the loss curve, self-contained), samples.txt.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import cliProgress from "cli-progress";
import { Value } from "../autodiff/core.js";
import { ArgumentError } from "../autodiff/errors.js";
import { evalShape, jit } from "../autodiff/jit.js";
import { valueAndGrad } from "../autodiff/transpose.js";
import * as tree from "../autodiff/tree.js";
import "../ops/hooks.js";
import "../ops/devices.js";
import { Array, setDefaultDevice } from "../ops/array.js";
import * as np from "../ops/np.js";
import * as random from "../ops/random.js";
import * as optim from "../nn/optim.js";
import * as palm from "../nn/palm.js";
import type { PalmConfig, PalmParams } from "../nn/palm.js";
import { generate } from "../nn/generate.js";
import { loadCheckpoint, saveCheckpoint } from "../io/checkpoint.js";
import { asTokens, Batcher, randomCrops, trainValSplit } from "../io/dataset.js";
import { getTokenizer, Tokenizer } from "../io/tokenizer.js";
import { lossCurveSvg, reportHtml } from "./plot.js";

export interface TrainLmOptions {
  /** A UTF-8 text file to train on (default: the embedded corpus, data/corpus.txt). */
  text?: string;
  /** The training text itself (instead of a file). */
  corpus?: string;
  /** "byte" (default), "bpe" (GPT-2's BPE) or "bpe:<encoding>". */
  tokenizer?: string;
  /** "cpu" (default) or "webgpu". */
  device?: "cpu" | "webgpu";
  /** Total training steps (the learning-rate schedule spans them; default 300). */
  steps?: number;
  /** Stop after this step although the schedule is for `steps` (an interruption; resume continues). */
  stopAt?: number;
  dim?: number;
  depth?: number;
  heads?: number;
  dimHead?: number;
  ffMult?: number;
  /** Sequences per batch (default 8). */
  batch?: number;
  /** Context length in tokens (default 64): crops of seq + 1 tokens. */
  seq?: number;
  /** Peak learning rate of the warm-up + cosine schedule (default 3e-3). */
  lr?: number;
  /** Warm-up steps (default min(50, steps / 10)). */
  warmup?: number;
  /** AdamW weight decay on the matrices (default 0.01). */
  weightDecay?: number;
  /** Global gradient-norm clip (default 1; 0 turns it off). */
  clip?: number;
  /** Fraction of the text held out for validation (default 0.1). */
  valFraction?: number;
  /** Validation loss every N steps (default 50; 0 = only at the end). */
  evalEvery?: number;
  /** Validation batches per evaluation (default 4). */
  evalBatches?: number;
  /** A sample generation every N steps (default 100; 0 = only at the end). */
  sampleEvery?: number;
  sampleTokens?: number;
  samplePrompt?: string;
  temperature?: number;
  topK?: number;
  /** Checkpoint every N steps (default: evalEvery) and at the end; needs `out`. */
  checkpointEvery?: number;
  /** Output directory (checkpoint, loss curve, samples); nothing is written without it. */
  out?: string;
  /** A checkpoint to continue from; its model config and training options win over the defaults. */
  resume?: string;
  seed?: number;
  /** Progress bar (default: when stderr is a terminal and not quiet). */
  progress?: boolean;
  /** No log lines. */
  quiet?: boolean;
  /** Where log lines go (default: stdout). */
  log?: (line: string) => void;
}

export interface TrainLmResult {
  /** Training loss per step, from step 0 (earlier steps come from the checkpoint when resumed). */
  losses: number[];
  /** [step, validation loss] after that many steps. */
  valLosses: [number, number][];
  samples: { step: number; text: string }[];
  params: PalmParams;
  optState: unknown;
  /** Steps completed. */
  step: number;
  config: PalmConfig;
  /** Training throughput of this invocation, steps after the first (which traces): tokens/s. */
  tokensPerSecond: number;
  checkpointPath: string | null;
}

/** The training options that shape the run (stored in the checkpoint, reused on resume). */
interface RunOptions {
  steps: number;
  batch: number;
  seq: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  clip: number;
  valFraction: number;
  seed: number;
  tokenizer: string;
}

/** The embedded corpus: data/corpus.txt, found from this file (src/cli or dist/src/cli) upwards. */
export function defaultCorpusPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = join(dir, "data", "corpus.txt");
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new ArgumentError("train-lm: the embedded corpus data/corpus.txt was not found\nTip: pass --text <file>, or run `npx tsx scripts/make-corpus.ts`");
}

const posInt = (name: string, v: number | undefined, min = 1): void => {
  if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new ArgumentError(`train-lm: ${name} must be an integer >= ${min}, got ${String(v)}`);
};
const nonNeg = (name: string, v: number | undefined): void => {
  if (v !== undefined && !(typeof v === "number" && Number.isFinite(v) && v >= 0)) throw new ArgumentError(`train-lm: ${name} must be a number >= 0, got ${String(v)}`);
};

/** AdamW with warm-up + cosine decay (to lr/10), decay on matrices only, optional clipping. */
function makeOptimizer(r: RunOptions): optim.GradientTransformation {
  const warmup = Math.min(r.warmup, r.steps - 1);
  const schedule =
    r.steps > 1 && warmup >= 0
      ? optim.warmupCosineDecaySchedule({ initValue: 0, peakValue: r.lr, warmupSteps: warmup, decaySteps: r.steps, endValue: r.lr / 10 })
      : optim.constantSchedule(r.lr);
  // Weight decay on matrices only (not on LayerNorm gains), as is usual for transformers.
  const decayMask = (p: unknown): unknown => tree.map((x: Value) => x.aval.ndim >= 2, p);
  const adamw = optim.adamw(schedule, { weightDecay: r.weightDecay, mask: decayMask });
  return r.clip > 0 ? optim.chain(optim.clipByGlobalNorm(r.clip), adamw) : adamw;
}

/** The training step: loss and gradients, optimiser update; params and optimiser state are donated. */
function makeStep(config: PalmConfig, opt: optim.GradientTransformation) {
  const lossFn = (p: PalmParams, tokens: Value): Value => palm.loss(p, tokens, { config, ignoreIndex: null });
  const step = (p: PalmParams, s: unknown, tokens: Value): [PalmParams, unknown, Value] => {
    const [loss, g] = valueAndGrad(lossFn)(p, tokens) as [Value, PalmParams];
    const [u, s2] = opt.update(g, s, p);
    return [optim.applyUpdates(p, u), s2, loss];
  };
  return { step: jit(step, { donateArgnums: [0, 1] }), evalLoss: jit(lossFn) };
}

const fmtLoss = (x: number): string => (Number.isFinite(x) ? x.toFixed(4) : String(x));

/** Trains (or resumes training of) a PaLM language model; see TrainLmOptions. */
export async function trainLm(options: TrainLmOptions = {}): Promise<TrainLmResult> {
  const quiet = options.quiet ?? false;
  const log = quiet ? () => undefined : options.log ?? ((s: string) => process.stdout.write(s + "\n"));
  for (const k of ["steps", "dim", "depth", "heads", "dimHead", "ffMult", "batch", "seq", "evalBatches", "sampleTokens"] as const) posInt(k, options[k]);
  for (const k of ["evalEvery", "sampleEvery", "checkpointEvery", "warmup", "seed", "stopAt"] as const) posInt(k, options[k], 0);
  for (const k of ["lr", "weightDecay", "clip", "valFraction", "temperature"] as const) nonNeg(k, options[k]);

  if (options.device === "webgpu") {
    const wg = await import("../ops/backend/webgpu/index.js");
    const dev = await wg.initWebGpu();
    if (!dev) throw new ArgumentError(`train-lm: --device webgpu, but no WebGPU device: ${wg.webGpuUnavailableReason() ?? "unknown reason"}`);
    setDefaultDevice(dev);
    log(`device: ${dev.description}`);
  } else if (options.device !== undefined && options.device !== "cpu") {
    throw new ArgumentError(`train-lm: device must be "cpu" or "webgpu", got ${JSON.stringify(options.device)}`);
  } else if (options.device === "cpu") {
    setDefaultDevice("cpu");
  }

  // Resume: the stored config and run options are the defaults; explicit options override the run options.
  type Stored = { config: PalmConfig; run: RunOptions; losses: number[]; val: [number, number][]; step: number; params: PalmParams; optState: unknown; key: Array };
  let stored: Stored | null = null;
  let storedRaw: Awaited<ReturnType<typeof loadCheckpoint>> | null = null;
  if (options.resume) {
    storedRaw = await loadCheckpoint(options.resume, {
      like: (ck) => {
        const config = ck.config as PalmConfig;
        const run = ((ck.extra as { run?: RunOptions } | undefined)?.run ?? {}) as RunOptions;
        const r = { ...run, ...definedRunOptions(options) } as RunOptions;
        const shapes = evalShape(() => {
          const p = palm.init(random.key(0), config);
          return { params: p, optState: makeOptimizer(r).init(p) };
        });
        return { params: shapes.params, optState: shapes.optState };
      },
    });
    const extra = storedRaw.extra as { run: RunOptions; losses: Array; valSteps: Array; valLosses: Array };
    const f = (a: Array): number[] => globalThis.Array.from(a.dataSync(), Number);
    const valSteps = f(extra.valSteps);
    const valLosses = f(extra.valLosses);
    stored = {
      config: storedRaw.config as PalmConfig,
      run: extra.run,
      losses: f(extra.losses),
      val: valSteps.map((s, i) => [s, valLosses[i]!] as [number, number]),
      step: storedRaw.step ?? 0,
      params: storedRaw.params as PalmParams,
      optState: storedRaw.optState,
      key: storedRaw.key!,
    };
    for (const k of ["dim", "depth", "heads", "dimHead", "ffMult"] as const) {
      const want = options[k];
      const have = (stored.config as unknown as Record<string, number>)[k];
      if (want !== undefined && want !== have) throw new ArgumentError(`train-lm: --${k} ${want} differs from the checkpoint's ${have}\nTip: leave the model options out when resuming`);
    }
  }

  const defaults: RunOptions = { steps: 300, batch: 8, seq: 64, lr: 3e-3, warmup: -1, weightDecay: 0.01, clip: 1, valFraction: 0.1, seed: 0, tokenizer: "byte" };
  const run: RunOptions = { ...defaults, ...(stored?.run ?? {}), ...definedRunOptions(options) };
  if (run.warmup < 0) run.warmup = Math.min(50, Math.floor(run.steps / 10));
  const tokenizer: Tokenizer = await getTokenizer(run.tokenizer);

  const config: PalmConfig = stored?.config ?? {
    numTokens: tokenizer.vocabSize,
    dim: options.dim ?? 64,
    depth: options.depth ?? 2,
    heads: options.heads ?? 4,
    dimHead: options.dimHead ?? 16,
    ffMult: options.ffMult ?? 4,
    crossEntropyIgnoreIndex: null,
  };
  if (config.numTokens < tokenizer.vocabSize) {
    throw new ArgumentError(`train-lm: the model has ${config.numTokens} tokens, the tokenizer ${tokenizer.name} needs ${tokenizer.vocabSize}`);
  }

  // Data.
  const textPath = options.corpus !== undefined ? null : resolve(options.text ?? defaultCorpusPath());
  const text = options.corpus ?? (await readFile(textPath!, "utf8"));
  const ids = asTokens(tokenizer.encode(text));
  const { train, val } = trainValSplit(ids, run.valFraction);
  const len = run.seq + 1;
  if (train.length < len) throw new ArgumentError(`train-lm: the training text has ${train.length} tokens, fewer than one crop of ${len}\nTip: more text or a smaller --seq`);
  const root = stored?.key ?? random.key(run.seed);
  const batcher = new Batcher(train, random.foldIn(root, 1), { batch: run.batch, len });
  const sampleKey = random.foldIn(root, 2);
  const evalCrops = val.length >= len ? await Promise.all(globalThis.Array.from({ length: options.evalBatches ?? 4 }, (_, i) => randomCrops(random.foldIn(random.foldIn(root, 3), i), val, run.batch, len))) : [];

  // Model and optimiser.
  const opt = makeOptimizer(run);
  let params: PalmParams = stored?.params ?? palm.init(random.foldIn(root, 0), config);
  let optState: unknown = stored?.optState ?? opt.init(params);
  const { step: trainStep, evalLoss } = makeStep(config, opt);
  const losses: number[] = stored?.losses.slice() ?? [];
  const valLosses: [number, number][] = stored?.val.slice() ?? [];
  const samples: { step: number; text: string }[] = [];
  let step = stored?.step ?? 0;
  if (losses.length !== step) losses.length = step;
  const stopAt = Math.min(run.steps, options.stopAt ?? run.steps);
  const evalEvery = options.evalEvery ?? 50;
  const sampleEvery = options.sampleEvery ?? 100;
  const ckptEvery = options.checkpointEvery ?? evalEvery;
  const out = options.out ? resolve(options.out) : null;
  const ckptPath = out ? join(out, "checkpoint.safetensors") : null;
  if (out) await mkdir(out, { recursive: true });

  log(
    `train-lm: ${palm.numParams(params).toLocaleString("en-US")} params (dim ${config.dim}, depth ${config.depth}, heads ${config.heads}, dimHead ${config.dimHead}), ` +
      `tokenizer ${tokenizer.name} (${tokenizer.vocabSize}), ${train.length.toLocaleString("en-US")} train / ${val.length.toLocaleString("en-US")} val tokens, ` +
      `batch ${run.batch} × ${run.seq}, steps ${step} → ${stopAt}${stored ? ` (resumed from ${options.resume})` : ""}`,
  );

  const validate = async (): Promise<number> => {
    if (evalCrops.length === 0) return NaN;
    let sum = 0;
    for (const b of evalCrops) sum += Number(await (evalLoss(params, b) as Array).item());
    return sum / evalCrops.length;
  };
  const sample = async (): Promise<string> => {
    const prompt = tokenizer.encode(options.samplePrompt ?? "Mia had a ");
    const g = await generate(params, [prompt], {
      config,
      key: random.foldIn(sampleKey, step),
      maxNewTokens: options.sampleTokens ?? 100,
      temperature: options.temperature ?? 0.8,
      topK: Math.min(options.topK ?? 20, config.numTokens),
      eosToken: tokenizer.eosId ?? null,
    });
    return tokenizer.decode([...prompt, ...g.completions[0]!]);
  };
  const writeCheckpoint = async (): Promise<void> => {
    if (!ckptPath) return;
    await saveCheckpoint(ckptPath, {
      params,
      optState,
      step,
      key: root as Array,
      config,
      extra: {
        run,
        losses: np.array(Float64Array.from(losses), { device: "cpu" }),
        valSteps: np.array(Float64Array.from(valLosses.map((v) => v[0])), { device: "cpu" }),
        valLosses: np.array(Float64Array.from(valLosses.map((v) => v[1])), { device: "cpu" }),
      },
    });
  };
  const writePlots = async (): Promise<void> => {
    if (!out) return;
    const trainPts = losses.map((l, i) => [i + 1, l] as [number, number]);
    const svg = lossCurveSvg(trainPts, valLosses, { title: `train-lm: ${tokenizer.name}, dim ${config.dim}, depth ${config.depth}` });
    await writeFile(join(out, "loss.svg"), svg);
    const facts: Record<string, string | number> = {
      steps: step,
      "final train loss": fmtLoss(losses.at(-1) ?? NaN),
      "final validation loss": fmtLoss(valLosses.at(-1)?.[1] ?? NaN),
      params: palm.numParams(params),
      config: JSON.stringify(config),
      run: JSON.stringify(run),
    };
    await writeFile(join(out, "loss.html"), reportHtml("webgrad train-lm", svg, facts, samples.map((s) => ({ title: `sample after step ${s.step}`, text: s.text }))));
    await writeFile(join(out, "samples.txt"), samples.map((s) => `--- step ${s.step}\n${s.text}\n`).join(""));
  };

  const useBar = (options.progress ?? (process.stderr.isTTY === true)) && !quiet;
  const multibar = useBar
    ? new cliProgress.MultiBar(
        { format: "train-lm |{bar}| {value}/{total} | loss {loss} | {tps} tok/s | ETA {eta_formatted}", hideCursor: true, clearOnComplete: false, stopOnComplete: false, etaBuffer: 20 },
        cliProgress.Presets.shades_classic,
      )
    : null;
  const bar = multibar?.create(stopAt, step, { loss: "-", tps: "-" }) ?? null;
  const say = (s: string): void => (multibar ? multibar.log(s + "\n") : log(s));

  let timedTokens = 0;
  let timedMs = 0;
  const first = step;
  try {
    while (step < stopAt) {
      const tokens = await batcher.at(step);
      const t0 = performance.now();
      const [p, s, lossV] = trainStep(params, optState, tokens);
      params = p;
      optState = s;
      const loss = Number(await (lossV as Array).item());
      const dt = performance.now() - t0;
      tokens.dispose();
      if (step > first) {
        timedTokens += run.batch * run.seq;
        timedMs += dt;
      }
      losses.push(loss);
      step++;
      const tps = timedMs > 0 ? (timedTokens / timedMs) * 1000 : (run.batch * run.seq * 1000) / dt;
      bar?.update(step, { loss: fmtLoss(loss), tps: tps.toFixed(0) });
      if (!Number.isFinite(loss)) throw new ArgumentError(`train-lm: the loss became ${loss} at step ${step}\nTip: lower --lr`);
      const last = step === stopAt;
      if ((evalEvery > 0 && step % evalEvery === 0) || last) {
        const v = await validate();
        if (Number.isFinite(v)) valLosses.push([step, v]);
        say(`step ${step}/${stopAt}: train loss ${fmtLoss(loss)}, validation loss ${fmtLoss(v)}, ${tps.toFixed(0)} tokens/s`);
      }
      if ((sampleEvery > 0 && step % sampleEvery === 0) || last) {
        const text = await sample();
        samples.push({ step, text });
        say(`sample at step ${step}: ${JSON.stringify(text)}`);
      }
      if ((ckptEvery > 0 && step % ckptEvery === 0) || last) {
        await writeCheckpoint();
        await writePlots();
      }
    }
  } finally {
    multibar?.stop();
  }
  if (step === first && out) await writePlots();
  const tokensPerSecond = timedMs > 0 ? (timedTokens / timedMs) * 1000 : NaN;
  if (out) log(`wrote ${ckptPath}, ${join(out, "loss.svg")}, ${join(out, "loss.html")}`);
  return { losses, valLosses, samples, params, optState, step, config, tokensPerSecond, checkpointPath: ckptPath };
}

/** The run options the caller set explicitly (undefined ones are left to the checkpoint / defaults). */
function definedRunOptions(o: TrainLmOptions): Partial<RunOptions> {
  const r: Partial<RunOptions> = {};
  for (const k of ["steps", "batch", "seq", "lr", "warmup", "weightDecay", "clip", "valFraction", "seed", "tokenizer"] as const) {
    if (o[k] !== undefined) (r as Record<string, unknown>)[k] = o[k];
  }
  return r;
}
