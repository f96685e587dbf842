/**
 * @file Generates data/corpus.txt, the small English-like corpus that `webgrad train-lm` trains on by
 * default: short stories, facts, sums, sequences and question/answer lines made from the templates and
 * word lists below (all written for this project). Deterministic: a fixed-seed PRNG, so re-running it
 * reproduces the committed file byte for byte.
 *
 *   npx tsx scripts/make-corpus.ts [--bytes 300000] [--out data/corpus.txt]
 *
 * The text is patterned on purpose: a tiny model can learn the consistent facts (animal sounds,
 * opposites, arithmetic, weekday order) quickly, so the loss curve and the samples show progress.
 */
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** mulberry32: a small, well-mixed 32-bit PRNG (public-domain algorithm), so the output is reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = mulberry32(20240531);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const cap = (s: string): string => s[0]!.toUpperCase() + s.slice(1);
/** "a" or "an" before a word, by its first letter (enough for these word lists). */
const an = (w: string): string => (/^[aeiou]/.test(w) ? `an ${w}` : `a ${w}`);

const names = ["Anna", "Ben", "Clara", "David", "Ella", "Finn", "Greta", "Hugo", "Iris", "Jonas", "Kira", "Leo", "Mia", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will"];
const animals: Record<string, { sound: string; home: string; food: string; legs: number }> = {
  cat: { sound: "meow", home: "house", food: "fish", legs: 4 },
  dog: { sound: "woof", home: "kennel", food: "bones", legs: 4 },
  cow: { sound: "moo", home: "barn", food: "grass", legs: 4 },
  duck: { sound: "quack", home: "pond", food: "bread", legs: 2 },
  sheep: { sound: "baa", home: "field", food: "grass", legs: 4 },
  hen: { sound: "cluck", home: "coop", food: "seeds", legs: 2 },
  owl: { sound: "hoot", home: "tree", food: "mice", legs: 2 },
  frog: { sound: "croak", home: "pond", food: "flies", legs: 4 },
  horse: { sound: "neigh", home: "stable", food: "hay", legs: 4 },
  pig: { sound: "oink", home: "sty", food: "apples", legs: 4 },
  bee: { sound: "buzz", home: "hive", food: "nectar", legs: 6 },
  mouse: { sound: "squeak", home: "hole", food: "cheese", legs: 4 },
};
const animalNames = Object.keys(animals);
const adjectives = ["small", "big", "happy", "sleepy", "brave", "quiet", "funny", "old", "young", "clever", "gentle", "hungry"];
const colors = ["red", "blue", "green", "yellow", "brown", "white", "black", "orange", "purple", "grey"];
const places = ["garden", "park", "forest", "village", "kitchen", "meadow", "river bank", "hill", "market", "school yard"];
const objects = ["ball", "hat", "book", "box", "key", "shoe", "cup", "kite", "drum", "lamp", "rope", "coin"];
const times = ["morning", "afternoon", "evening", "night", "day"];
const feelings = ["happy", "surprised", "glad", "proud", "tired", "excited", "calm"];
const verbs = ["run", "jump", "sing", "sleep", "play", "dig", "swim", "hide", "dance", "read"];
const opposites: [string, string][] = [
  ["hot", "cold"], ["big", "small"], ["up", "down"], ["day", "night"], ["fast", "slow"], ["old", "new"],
  ["open", "closed"], ["full", "empty"], ["light", "dark"], ["happy", "sad"], ["wet", "dry"], ["early", "late"],
];
const fruits: Record<string, string> = { apple: "red", banana: "yellow", lemon: "yellow", lime: "green", plum: "purple", orange: "orange", cherry: "red", pear: "green" };
const numberWords = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"];
const days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const months = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"];

function story(): string {
  const n = pick(names);
  const a = pick(animalNames);
  const info = animals[a]!;
  const adj = pick(adjectives);
  const obj = pick(objects);
  const col = pick(colors);
  const lines = [
    `${n} had ${an(adj)} ${a}.`,
    `The ${a} lived in ${an(info.home)} and liked to eat ${info.food}.`,
    `Every ${pick(times)}, the ${a} went to the ${pick(places)} to ${pick(verbs)}.`,
    `One day the ${a} found ${an(col)} ${obj}.`,
    `"${cap(info.sound)}!" said the ${a}, and ${n} was ${pick(feelings)}.`,
  ];
  if (rand() < 0.5) lines.push(`${n} put the ${col} ${obj} in the ${info.home}, and the ${a} went to sleep.`);
  return lines.join(" ");
}

function facts(): string {
  const out: string[] = [];
  for (let i = 0; i < 4; i++) {
    const a = pick(animalNames);
    const info = animals[a]!;
    switch (Math.floor(rand() * 5)) {
      case 0: out.push(`${cap(an(a))} says ${info.sound}.`); break;
      case 1: out.push(`${cap(an(a))} has ${numberWords[info.legs]} legs.`); break;
      case 2: out.push(`${cap(an(a))} lives in ${an(info.home)}.`); break;
      case 3: out.push(`${cap(an(a))} likes to eat ${info.food}.`); break;
      default: {
        const [f, c] = pick(Object.entries(fruits));
        out.push(`The color of ${an(f)} is ${c}.`);
      }
    }
  }
  return out.join(" ");
}

function sums(): string {
  const out: string[] = [];
  for (let i = 0; i < 3; i++) {
    const x = Math.floor(rand() * 11);
    const y = Math.floor(rand() * (11 - Math.min(x, 10)));
    if (rand() < 0.7) out.push(`${cap(numberWords[x]!)} plus ${numberWords[y]} is ${numberWords[x + y]}.`);
    else {
      const big = Math.max(x, y), small = Math.min(x, y);
      out.push(`${cap(numberWords[big]!)} minus ${numberWords[small]} is ${numberWords[big - small]}.`);
    }
  }
  return out.join(" ");
}

function sequences(): string {
  switch (Math.floor(rand() * 4)) {
    case 0: {
      const i = Math.floor(rand() * 7);
      return `After ${days[i]} comes ${days[(i + 1) % 7]}.`;
    }
    case 1: {
      const i = Math.floor(rand() * 12);
      return `After ${months[i]} comes ${months[(i + 1) % 12]}.`;
    }
    case 2: {
      const s = Math.floor(rand() * 15);
      return `Counting: ${numberWords.slice(s, s + 6).join(", ")}.`;
    }
    default: {
      const s = Math.floor(rand() * 7);
      return `The week goes ${[0, 1, 2, 3].map((k) => days[(s + k) % 7]).join(", ")}.`;
    }
  }
}

function questions(): string {
  const a = pick(animalNames);
  const info = animals[a]!;
  const [w, o] = pick(opposites);
  switch (Math.floor(rand() * 4)) {
    case 0: return `Q: What does ${an(a)} say? A: ${cap(an(a))} says ${info.sound}.`;
    case 1: return `Q: What is the opposite of ${w}? A: The opposite of ${w} is ${o}.`;
    case 2: return `Q: Where does ${an(a)} live? A: ${cap(an(a))} lives in ${an(info.home)}.`;
    default: {
      const x = Math.floor(rand() * 10), y = Math.floor(rand() * 10);
      return `Q: What is ${numberWords[x]} plus ${numberWords[y]}? A: ${cap(numberWords[x]!)} plus ${numberWords[y]} is ${numberWords[x + y]}.`;
    }
  }
}

function paragraph(): string {
  const r = rand();
  if (r < 0.35) return story();
  if (r < 0.55) return facts();
  if (r < 0.7) return sums();
  if (r < 0.8) return sequences();
  return questions();
}

function parseArgs(argv: string[]): { bytes: number; out: string } {
  const here = dirname(fileURLToPath(import.meta.url));
  let bytes = 300_000;
  let out = resolve(here, "../data/corpus.txt");
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--bytes") bytes = Number(argv[++i]);
    else if (argv[i] === "--out") out = resolve(argv[++i]!);
  }
  return { bytes, out };
}

const { bytes, out } = parseArgs(process.argv.slice(2));
const parts: string[] = [];
let size = 0;
while (size < bytes) {
  const p = paragraph() + "\n";
  parts.push(p);
  size += Buffer.byteLength(p);
}
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, parts.join(""));
console.log(`wrote ${size} bytes (${parts.length} paragraphs) to ${out}`);
