/**
 * @file Tokenizers: text <-> token ids. Two kinds share the `Tokenizer` interface:
 *  - `byteTokenizer()`: the UTF-8 bytes of the text, 256 ids, exactly reversible for any string (no
 *    vocabulary to ship; what the `train-lm` CLI uses by default). `byteTokenizer({ special: true })`
 *    adds three ids above the bytes: pad = 256, bos = 257, eos = 258 (vocabSize 259).
 *  - `bpeTokenizer(encoding)`: OpenAI's byte-level BPE vocabularies through the `gpt-tokenizer`
 *    package ("r50k_base" = GPT-2's 50257 tokens, default; "p50k_base", "cl100k_base", "o200k_base").
 *    eos is the vocabulary's `<|endoftext|>`; special-token strings inside the text are encoded as
 *    plain text (never as the special id), so training text cannot inject control tokens.
 */
import { ArgumentError } from "../autodiff/errors.js";

export interface Tokenizer {
  /** For messages and checkpoints ("byte", "byte+special", "bpe:r50k_base"). */
  readonly name: string;
  /** Number of ids (the model's numTokens must be at least this). */
  readonly vocabSize: number;
  /** Special ids, where the tokenizer has them. */
  readonly padId?: number;
  readonly bosId?: number;
  readonly eosId?: number;
  encode(text: string): number[];
  /** Text of the ids; special ids are dropped, and invalid UTF-8 becomes U+FFFD. */
  decode(ids: Iterable<number>): string;
}

export const BYTE_PAD = 256;
export const BYTE_BOS = 257;
export const BYTE_EOS = 258;

/** UTF-8 bytes as tokens (see the file comment for the special ids). */
export function byteTokenizer(opts: { special?: boolean } = {}): Tokenizer {
  const special = opts.special ?? false;
  const enc = new TextEncoder();
  const vocabSize = special ? 259 : 256;
  return {
    name: special ? "byte+special" : "byte",
    vocabSize,
    ...(special ? { padId: BYTE_PAD, bosId: BYTE_BOS, eosId: BYTE_EOS } : {}),
    encode: (text: string): number[] => {
      if (typeof text !== "string") throw new ArgumentError(`byteTokenizer.encode: needs a string, got ${typeof text}`);
      return globalThis.Array.from(enc.encode(text));
    },
    decode: (ids: Iterable<number>): string => {
      const bytes: number[] = [];
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new ArgumentError(`byteTokenizer.decode: ids must be integers in [0, ${vocabSize}), got ${id}`);
        if (id < 256) bytes.push(id);
      }
      return new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(bytes));
    },
  };
}

export type BpeEncoding = "r50k_base" | "p50k_base" | "cl100k_base" | "o200k_base";
const ENCODINGS: readonly BpeEncoding[] = ["r50k_base", "p50k_base", "cl100k_base", "o200k_base"];

interface GptEncodingModule {
  encode(text: string, opts?: { allowedSpecial?: Set<string>; disallowedSpecial?: Set<string> }): number[];
  decode(ids: Iterable<number>): string;
  vocabularySize: number;
}

/** A BPE tokenizer from `gpt-tokenizer` (loaded on first use, hence async). */
export async function bpeTokenizer(encoding: BpeEncoding = "r50k_base"): Promise<Tokenizer> {
  if (!ENCODINGS.includes(encoding)) throw new ArgumentError(`bpeTokenizer: encoding must be one of ${ENCODINGS.join(", ")}, got ${String(encoding)}`);
  const m = (await import(`gpt-tokenizer/encoding/${encoding}`)) as GptEncodingModule;
  const eosId = m.encode("<|endoftext|>", { allowedSpecial: new Set(["<|endoftext|>"]) })[0]!;
  const vocabSize = Math.max(m.vocabularySize, eosId + 1);
  const plain = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };
  return {
    name: `bpe:${encoding}`,
    vocabSize,
    eosId,
    encode: (text: string): number[] => {
      if (typeof text !== "string") throw new ArgumentError(`bpeTokenizer.encode: needs a string, got ${typeof text}`);
      return m.encode(text, plain);
    },
    decode: (ids: Iterable<number>): string => {
      const keep: number[] = [];
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new ArgumentError(`bpeTokenizer.decode: ids must be integers in [0, ${vocabSize}), got ${id}`);
        if (id !== eosId) keep.push(id);
      }
      return m.decode(keep);
    },
  };
}

/** A tokenizer by name: "byte", "byte+special", "bpe" (r50k_base) or "bpe:<encoding>". */
export async function getTokenizer(name: string): Promise<Tokenizer> {
  if (name === "byte") return byteTokenizer();
  if (name === "byte+special") return byteTokenizer({ special: true });
  if (name === "bpe") return bpeTokenizer();
  if (name.startsWith("bpe:")) return bpeTokenizer(name.slice(4) as BpeEncoding);
  throw new ArgumentError(`getTokenizer: name must be "byte", "byte+special", "bpe" or "bpe:<encoding>", got ${JSON.stringify(name)}`);
}
