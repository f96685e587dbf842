/**
 * @file A loss-curve plot as a self-contained SVG (no plotting dependency) and an HTML page around it.
 * `lossCurveSvg` draws the training loss (raw, faint, and an exponential moving average), the
 * validation loss as markers, "nice" axis ticks, and a legend.
 */

export interface Series {
  name: string;
  /** [step, value] points; non-finite values are skipped. */
  points: readonly (readonly [number, number])[];
  color: string;
  /** "line" (default) or "markers". */
  style?: "line" | "markers";
  opacity?: number;
  width?: number;
}

export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  /**
   * Where the legend goes. Without it, the legend is drawn at the top right with no background (the
   * original layout); with it, in that corner on a white box sized to the longest name.
   */
  legend?: "top-right" | "top-left" | "bottom-right" | "bottom-left";
}

/** Escapes text for XML / HTML. */
export function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  // The 1-2-5 step whose number of intervals is closest to `count`.
  let step = mag;
  for (const m of [1, 2, 5, 10]) if (Math.abs((hi - lo) / (m * mag) - count) < Math.abs((hi - lo) / step - count)) step = m * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const fmt = (v: number): string => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(Number(v.toPrecision(4))));

/** Exponential moving average of the values (bias-corrected, as TensorBoard's smoothing). */
export function ema(points: readonly (readonly [number, number])[], alpha = 0.9): [number, number][] {
  let m = 0;
  let w = 0;
  return points.map(([x, y]) => {
    m = alpha * m + (1 - alpha) * y;
    w = alpha * w + (1 - alpha);
    return [x, m / w];
  });
}

/** An SVG document plotting the series against shared axes. */
export function plotSvg(series: readonly Series[], opts: PlotOptions = {}): string {
  const W = opts.width ?? 720;
  const H = opts.height ?? 420;
  const m = { left: 64, right: 20, top: opts.title ? 40 : 16, bottom: 48 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  let [x0, x1] = all.length ? [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))] : [0, 1];
  let [y0, y1] = all.length ? [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))] : [0, 1];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const sx = (x: number): number => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number): number => m.top + (1 - (y - y0) / (y1 - y0)) * ph;
  const r = (v: number): string => v.toFixed(1);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  if (opts.title) parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${escapeXml(opts.title)}</text>`);
  for (const t of niceTicks(y0, y1, 6)) {
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${r(sy(t))}" y2="${r(sy(t))}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${m.left - 6}" y="${r(sy(t) + 4)}" text-anchor="end">${escapeXml(fmt(t))}</text>`);
  }
  for (const t of niceTicks(x0, x1, 8)) {
    parts.push(`<line x1="${r(sx(t))}" x2="${r(sx(t))}" y1="${m.top + ph}" y2="${m.top + ph + 4}" stroke="#333"/>`);
    parts.push(`<text x="${r(sx(t))}" y="${m.top + ph + 18}" text-anchor="middle">${escapeXml(fmt(t))}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  if (opts.xLabel) parts.push(`<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${escapeXml(opts.xLabel)}</text>`);
  if (opts.yLabel) parts.push(`<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(opts.yLabel)}</text>`);
  for (const s of series) {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const op = s.opacity ?? 1;
    if (s.style === "markers") {
      for (const [x, y] of pts) parts.push(`<circle cx="${r(sx(x))}" cy="${r(sy(y))}" r="3.5" fill="${s.color}" fill-opacity="${op}"/>`);
    } else if (pts.length > 0) {
      const d = pts.map(([x, y]) => `${r(sx(x))},${r(sy(y))}`).join(" ");
      parts.push(`<polyline points="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1.5}" stroke-opacity="${op}"/>`);
    }
  }
  // Legend: the original top-right layout, or a boxed one in the corner `opts.legend` names.
  const boxW = 36 + 6.6 * Math.max(0, ...series.map((s) => s.name.length));
  const boxH = 8 + series.length * 18;
  const boxX = opts.legend?.endsWith("left") ? m.left + 8 : m.left + pw - boxW - 8;
  const boxY = opts.legend?.startsWith("bottom") ? m.top + ph - boxH - 8 : m.top + 4;
  if (opts.legend && series.length > 0) {
    parts.push(`<rect x="${r(boxX)}" y="${r(boxY)}" width="${r(boxW)}" height="${boxH}" fill="white" fill-opacity="0.85" stroke="#ccc"/>`);
  }
  series.forEach((s, i) => {
    const y = opts.legend ? boxY + 18 + i * 18 : m.top + 14 + i * 18;
    const x = opts.legend ? boxX + 8 : m.left + pw - 150;
    parts.push(
      s.style === "markers"
        ? `<circle cx="${x + 10}" cy="${y - 4}" r="3.5" fill="${s.color}"/>`
        : `<line x1="${x}" x2="${x + 20}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="2" stroke-opacity="${s.opacity ?? 1}"/>`,
    );
    parts.push(`<text x="${x + 26}" y="${y}">${escapeXml(s.name)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/** The training-loss plot: raw train loss (faint), its moving average, and validation points. */
export function lossCurveSvg(train: readonly (readonly [number, number])[], val: readonly (readonly [number, number])[], opts: PlotOptions = {}): string {
  const series: Series[] = [
    { name: "train loss", points: train, color: "#1f77b4", opacity: 0.3, width: 1 },
    { name: "train (EMA 0.9)", points: ema(train), color: "#1f77b4", width: 2 },
  ];
  if (val.length > 0) series.push({ name: "validation loss", points: val, color: "#d62728", style: "markers" });
  return plotSvg(series, { xLabel: "step", yLabel: "loss (nats / token)", ...opts });
}

/** A standalone HTML page: the SVG inline, then a table of key/value facts and any text blocks. */
export function reportHtml(title: string, svg: string, facts: Record<string, string | number>, blocks: { title: string; text: string }[] = []): string {
  const rows = Object.entries(facts)
    .map(([k, v]) => `<tr><th>${escapeXml(k)}</th><td>${escapeXml(String(v))}</td></tr>`)
    .join("\n");
  const pre = blocks.map((b) => `<h3>${escapeXml(b.title)}</h3>\n<pre>${escapeXml(b.text)}</pre>`).join("\n");
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${escapeXml(title)}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}th{text-align:left;padding-right:1em}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}</style>
</head><body>
<h1>${escapeXml(title)}</h1>
${svg}
<table>
${rows}
</table>
${pre}
</body></html>
`;
}
