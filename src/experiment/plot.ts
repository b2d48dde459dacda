/**
 * Small, dependency-free SVG charts for experiment reports (line charts with a shaded band, and
 * grouped bars), rendered to PNG with resvg (no native canvas).
 */
import { Resvg } from "@resvg/resvg-js";

export interface Point {
  x: number;
  y: number;
  /** band around y (e.g. mean ± std over seeds) */
  lo?: number;
  hi?: number;
}

export interface Series {
  label: string;
  points: Point[];
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  width?: number;
  height?: number;
  /** draw bars instead of lines (x values are categories) */
  bars?: boolean;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** About five round tick values covering [lo, hi]. */
export function ticks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function label(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${(v / 1e3).toPrecision(3)}k`;
  return Number(v.toPrecision(4)).toString();
}

export function chartSvg(o: ChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 420;
  const m = { l: 70, r: 180, t: 40, b: 55 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const pts = o.series.flatMap((s) => s.points);
  const xs = pts.map((p) => p.x);
  const ys = pts.flatMap((p) => [p.y, p.lo ?? p.y, p.hi ?? p.y]).filter(Number.isFinite);
  let x0 = xs.length ? Math.min(...xs) : 0;
  let x1 = xs.length ? Math.max(...xs) : 1;
  let y0 = ys.length ? Math.min(...ys) : 0;
  let y1 = ys.length ? Math.max(...ys) : 1;
  if (o.bars) {
    x0 -= 0.5;
    x1 += 0.5;
    y0 = Math.min(0, y0);
  }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + (y0 === 0 ? 1 : Math.abs(y0) * 0.1);
  const pad = (y1 - y0) * 0.05;
  if (!o.bars || y0 < 0) y0 -= pad;
  y1 += pad;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + ph - ((y - y0) / (y1 - y0)) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="22" text-anchor="middle" font-size="15">${esc(o.title)}</text>`);
  for (const t of ticks(y0, y1)) {
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${m.l - 6}" y="${(sy(t) + 4).toFixed(1)}" text-anchor="end">${label(t)}</text>`);
  }
  const xt = o.bars ? [...new Set(xs)].sort((a, b) => a - b) : ticks(x0, x1);
  for (const t of xt) out.push(`<text x="${sx(t).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${label(t)}</text>`);
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  const nS = Math.max(1, o.series.length);
  o.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length]!;
    const p = [...s.points].sort((a, b) => a.x - b.x);
    if (o.bars) {
      const bw = (pw / Math.max(1, xt.length) / (nS + 1)) * 0.9;
      for (const q of p) {
        const x = sx(q.x) - (bw * nS) / 2 + i * bw;
        const top = sy(Math.max(q.y, 0));
        out.push(`<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${Math.max(0, sy(Math.min(q.y, 0)) - top).toFixed(1)}" fill="${c}"/>`);
      }
    } else {
      const band = p.filter((q) => q.lo !== undefined && q.hi !== undefined && q.hi !== q.lo);
      if (band.length > 1) {
        const upper = band.map((q) => `${sx(q.x).toFixed(1)},${sy(q.hi!).toFixed(1)}`);
        const lower = band.map((q) => `${sx(q.x).toFixed(1)},${sy(q.lo!).toFixed(1)}`).reverse();
        out.push(`<polygon points="${[...upper, ...lower].join(" ")}" fill="${c}" fill-opacity="0.18" stroke="none"/>`);
      }
      if (p.length > 1) out.push(`<polyline points="${p.map((q) => `${sx(q.x).toFixed(1)},${sy(q.y).toFixed(1)}`).join(" ")}" fill="none" stroke="${c}" stroke-width="2"/>`);
      else for (const q of p) out.push(`<circle cx="${sx(q.x).toFixed(1)}" cy="${sy(q.y).toFixed(1)}" r="3" fill="${c}"/>`);
    }
    const ly = m.t + 10 + i * 18;
    out.push(`<rect x="${m.l + pw + 12}" y="${ly - 8}" width="14" height="10" fill="${c}"/>`);
    out.push(`<text x="${m.l + pw + 32}" y="${ly + 1}">${esc(s.label.length > 24 ? `${s.label.slice(0, 23)}…` : s.label)}</text>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}

export function svgToPng(svg: string): Buffer {
  return new Resvg(svg, { fitTo: { mode: "zoom", value: 2 } }).render().asPng();
}
