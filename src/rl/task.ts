/**
 * @file The embedded toy task of `webgrad rlhf`: a tiny character vocabulary, prompts, SFT
 * demonstrations, and a *hidden* scoring rule of the response that the policy never sees. It is built
 * so that RLHF visibly works in minutes on two CPU cores:
 *
 *  - Vocabulary: pad, bos, eos, sep and the 16 letters a..p (20 tokens). A prompt is `^` + 3..5 random
 *    letters + `>`; a response is `responseLength` letters + `$`. Example: `^dkfa>dkfadkfa$`.
 *  - Demonstrations (the SFT data) "echo" the prompt: response letter j copies prompt letter j mod k
 *    with probability `copyProb`, otherwise it is a uniformly random letter. The SFT model learns that
 *    visible skill; it knows nothing of the hidden rule.
 *  - The hidden rule: the fraction of response letters in a hidden set (default the "vowels" a, e, i,
 *    o: 4 of the 16 letters), so demonstrations score about 0.25 (they cover the rule only weakly).
 *  - Preferences: pairs of responses to the same prompt from a broad behaviour distribution (echo with
 *    a random noise rate, noise letters biased towards the hidden set by a random amount, as if the
 *    pairs came from many different annotated models), labelled chosen/rejected by the hidden rule
 *    (ties dropped). The reward model must infer the rule from these comparisons alone.
 *  - PPO then raises the hidden score of the policy's responses to held-out prompts, with a KL penalty
 *    to the SFT model keeping the echo behaviour (the RM, not the rule, is what PPO optimises).
 *
 * All the data is generated on the host by a small seeded PRNG (mulberry32), so it is identical on CPU
 * and WebGPU and costs no device work. Train and held-out prompts are disjoint.
 */
import { ArgumentError } from "../autodiff/errors.js";

export const PAD = 0;
export const BOS = 1;
export const EOS = 2;
export const SEP = 3;
/** The letters of the vocabulary, token ids 4.. in this order. */
export const LETTERS = "abcdefghijklmnop";
export const FIRST_LETTER = 4;
/** 20: pad, bos, eos, sep and 16 letters. */
export const VOCAB_SIZE = FIRST_LETTER + LETTERS.length;

export interface TaskConfig {
  /** Shortest / longest prompt, in letters (default 3 / 5). */
  minPromptLetters: number;
  maxPromptLetters: number;
  /** Letters per response, before the eos (default 8). */
  responseLength: number;
  /** Probability that a demonstration letter copies the prompt (default 0.7). */
  copyProb: number;
  /** The hidden set of letters that the rule counts (default "aeio"). */
  hiddenLetters: string;
}

export const defaultTaskConfig: TaskConfig = {
  minPromptLetters: 3,
  maxPromptLetters: 5,
  responseLength: 8,
  copyProb: 0.7,
  hiddenLetters: "aeio",
};

/** A seeded PRNG (mulberry32): floats in [0, 1). Deterministic across platforms. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const randInt = (r: () => number, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));

/** Checks a task config (the named errors of config.ts wrap these for the pipeline). */
export function checkTaskConfig(c: TaskConfig): void {
  const intIn = (k: keyof TaskConfig, lo: number, hi: number): void => {
    const v = c[k];
    if (!(typeof v === "number" && Number.isInteger(v) && v >= lo && v <= hi)) throw new ArgumentError(`task: ${k} must be an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  };
  intIn("minPromptLetters", 1, 32);
  intIn("maxPromptLetters", 1, 32);
  intIn("responseLength", 1, 64);
  if (c.maxPromptLetters < c.minPromptLetters) {
    throw new ArgumentError(`task: maxPromptLetters must be >= minPromptLetters (${c.minPromptLetters}), got ${c.maxPromptLetters}`);
  }
  if (!(typeof c.copyProb === "number" && c.copyProb >= 0 && c.copyProb <= 1)) throw new ArgumentError(`task: copyProb must be in [0, 1], got ${JSON.stringify(c.copyProb)}`);
  if (typeof c.hiddenLetters !== "string" || c.hiddenLetters.length === 0 || c.hiddenLetters.length >= LETTERS.length || [...c.hiddenLetters].some((ch) => !LETTERS.includes(ch))) {
    throw new ArgumentError(`task: hiddenLetters must be a non-empty proper subset of "${LETTERS}", got ${JSON.stringify(c.hiddenLetters)}`);
  }
  if (new Set(c.hiddenLetters).size !== c.hiddenLetters.length) throw new ArgumentError(`task: hiddenLetters must not repeat a letter, got ${JSON.stringify(c.hiddenLetters)}`);
}

/** Token ids of text over the task's alphabet (`^` bos, `$` eos, `>` sep, `_` pad, letters a..p). */
export function encode(text: string): number[] {
  return [...text].map((ch) => {
    if (ch === "_") return PAD;
    if (ch === "^") return BOS;
    if (ch === "$") return EOS;
    if (ch === ">") return SEP;
    const i = LETTERS.indexOf(ch);
    if (i < 0) throw new ArgumentError(`task.encode: characters must be letters a..p or one of ^ $ > _, got ${JSON.stringify(ch)}`);
    return FIRST_LETTER + i;
  });
}

/** Text of token ids (pad shown as `_`). */
export function decode(ids: Iterable<number>): string {
  let s = "";
  for (const id of ids) {
    if (id === PAD) s += "_";
    else if (id === BOS) s += "^";
    else if (id === EOS) s += "$";
    else if (id === SEP) s += ">";
    else if (id >= FIRST_LETTER && id < VOCAB_SIZE) s += LETTERS[id - FIRST_LETTER];
    else s += "?";
  }
  return s;
}

/** The task: data generators and the hidden rule for one config. */
export class ToyTask {
  readonly config: TaskConfig;
  readonly vocabSize = VOCAB_SIZE;
  readonly eosToken = EOS;
  readonly padToken = PAD;
  /** Tokens per response including eos. */
  readonly maxNewTokens: number;
  /** The hidden rule's letters as token ids. */
  private readonly hidden: Set<number>;

  constructor(config: Partial<TaskConfig> = {}) {
    this.config = { ...defaultTaskConfig, ...config };
    checkTaskConfig(this.config);
    this.hidden = new Set(encode(this.config.hiddenLetters));
    this.maxNewTokens = this.config.responseLength + 1;
  }

  /** Longest prompt in tokens (bos + letters + sep). */
  get maxPromptTokens(): number {
    return this.config.maxPromptLetters + 2;
  }

  /** Longest prompt + response in tokens. */
  get maxSequenceTokens(): number {
    return this.maxPromptTokens + this.maxNewTokens;
  }

  private letter(r: () => number): number {
    return FIRST_LETTER + Math.floor(r() * LETTERS.length);
  }

  private hiddenLetter(r: () => number): number {
    const h = [...this.hidden];
    return h[Math.floor(r() * h.length)]!;
  }

  /** A random prompt: bos, letters, sep. */
  prompt(r: () => number): number[] {
    const k = randInt(r, this.config.minPromptLetters, this.config.maxPromptLetters);
    return [BOS, ...Array.from({ length: k }, () => this.letter(r)), SEP];
  }

  /**
   * `count` distinct prompts from `seed`, none of them in `exclude` (so held-out prompts never appear in
   * training). Throws when the prompt space is too small for the request.
   */
  prompts(seed: number, count: number, exclude: ReadonlySet<string> = new Set()): number[][] {
    const r = rng(seed);
    const seen = new Set<string>();
    const out: number[][] = [];
    let tries = 0;
    while (out.length < count) {
      if (++tries > count * 50 + 1000) throw new ArgumentError(`task.prompts: cannot draw ${count} distinct prompts, got ${out.length}\nTip: fewer prompts, or longer prompts (maxPromptLetters)`);
      const p = this.prompt(r);
      const k = p.join(",");
      if (seen.has(k) || exclude.has(k)) continue;
      seen.add(k);
      out.push(p);
    }
    return out;
  }

  /**
   * A response to `prompt` (letters then eos): each letter copies the prompt's letters cyclically with
   * probability `copyProb`, else is noise; noise is a hidden letter with probability `hiddenBias`,
   * otherwise uniform. Demonstrations use hiddenBias 0.
   */
  response(prompt: readonly number[], r: () => number, opts: { copyProb?: number; hiddenBias?: number } = {}): number[] {
    const letters = prompt.filter((t) => t >= FIRST_LETTER);
    const copy = opts.copyProb ?? this.config.copyProb;
    const bias = opts.hiddenBias ?? 0;
    const out: number[] = [];
    for (let j = 0; j < this.config.responseLength; j++) {
      if (letters.length > 0 && r() < copy) out.push(letters[j % letters.length]!);
      else out.push(r() < bias ? this.hiddenLetter(r) : this.letter(r));
    }
    out.push(EOS);
    return out;
  }

  /** SFT demonstrations: prompt + response token lists, with the prompt's length. */
  demonstrations(prompts: readonly (readonly number[])[], seed: number, perPrompt = 1): { tokens: number[]; promptLength: number }[] {
    const r = rng(seed);
    return prompts.flatMap((p) => Array.from({ length: perPrompt }, () => ({ tokens: [...p, ...this.response(p, r)], promptLength: p.length })));
  }

  /**
   * The hidden rule: the fraction of the response's letters (tokens after the prompt, up to eos, pad
   * and specials not counted in the numerator, every position up to eos in the denominator) that are in
   * the hidden set. An empty response scores 0.
   */
  score(response: readonly number[]): number {
    let n = 0;
    let h = 0;
    for (const t of response) {
      if (t === EOS || t === PAD) break;
      n++;
      if (this.hidden.has(t)) h++;
    }
    return n === 0 ? 0 : h / n;
  }

  /**
   * Preference pairs for the reward model, labelled by the hidden rule: for each pair a prompt from
   * `prompts`, two responses with independent random copy rates (0.2..1) and hidden biases (0..1), the
   * higher-scoring one chosen; ties are redrawn.
   */
  preferencePairs(prompts: readonly (readonly number[])[], seed: number, count: number): PreferencePair[] {
    const r = rng(seed);
    const out: PreferencePair[] = [];
    let tries = 0;
    while (out.length < count) {
      if (++tries > count * 100 + 1000) throw new ArgumentError(`task.preferencePairs: cannot draw ${count} pairs without ties, got ${out.length}`);
      const p = prompts[Math.floor(r() * prompts.length)]!;
      const draw = (): number[] => this.response(p, r, { copyProb: 0.2 + 0.8 * r(), hiddenBias: r() * r() });
      const a = draw();
      const b = draw();
      const sa = this.score(a);
      const sb = this.score(b);
      if (sa === sb) continue;
      out.push(sa > sb ? { prompt: [...p], chosen: a, rejected: b, margin: sa - sb } : { prompt: [...p], chosen: b, rejected: a, margin: sb - sa });
    }
    return out;
  }

  /** The fraction of a response's letters that copy the prompt cyclically (the visible skill). */
  echoRate(prompt: readonly number[], response: readonly number[]): number {
    const letters = prompt.filter((t) => t >= FIRST_LETTER);
    let n = 0;
    let c = 0;
    for (let j = 0; j < response.length; j++) {
      const t = response[j]!;
      if (t === EOS || t === PAD) break;
      n++;
      if (letters.length > 0 && t === letters[j % letters.length]) c++;
    }
    return n === 0 ? 0 : c / n;
  }
}

export interface PreferencePair {
  prompt: number[];
  /** Response tokens (letters and eos). */
  chosen: number[];
  rejected: number[];
  /** score(chosen) - score(rejected) > 0. */
  margin: number;
}

/**
 * Pads token lists to [batch, len] (row-major Int32Array) with `pad`, left-aligned; also returns each
 * row's length. `len` defaults to the longest row.
 */
export function padRows(rows: readonly (readonly number[])[], len?: number, pad = PAD): { data: Int32Array; len: number; lengths: number[] } {
  const n = len ?? Math.max(1, ...rows.map((r) => r.length));
  const data = new Int32Array(rows.length * n).fill(pad);
  rows.forEach((r, i) => {
    if (r.length > n) throw new ArgumentError(`padRows: row ${i} has ${r.length} tokens, more than ${n}`);
    data.set(r, i * n);
  });
  return { data, len: n, lengths: rows.map((r) => r.length) };
}
