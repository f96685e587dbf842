/**
 * @file webgrad's Node I/O: safetensors files, training checkpoints (atomic), tokenizers and
 * language-model datasets. Kept out of src/index.ts's main entry because it imports `node:fs`.
 */
export * as safetensors from "./safetensors.js";
export { SafetensorsError } from "./safetensors.js";
export { saveCheckpoint, loadCheckpoint, CheckpointError } from "./checkpoint.js";
export type { Checkpoint, CheckpointTemplates, LoadCheckpointOptions } from "./checkpoint.js";
export { atomicWriteFile } from "./atomic.js";
export type { AtomicWriteOptions } from "./atomic.js";
export { byteTokenizer, bpeTokenizer, getTokenizer, BYTE_PAD, BYTE_BOS, BYTE_EOS } from "./tokenizer.js";
export type { Tokenizer, BpeEncoding } from "./tokenizer.js";
export { asTokens, trainValSplit, cropStarts, randomCrops, Batcher, sequentialBatches } from "./dataset.js";
export type { Tokens, BatcherOptions } from "./dataset.js";
