// Short history charts: one SVG line per point over the last hour; gaps over 3 minutes break the line.
import { s, h } from "./dom.js";

export function lineChart(title, unit, points, since, until) {
  const W = 300, H = 90, P = 4;
  const vals = points.map((p) => p[1]);
  const wrap = h("figure", { class: "chart" });
  const last = points.length ? points[points.length - 1][1] : null;
  wrap.append(h("figcaption", {}, h("span", {}, title), h("b", {}, last === null ? "—" : `${fmt(last)} ${unit}`)));
  if (!points.length) {
    wrap.append(h("div", { class: "chart-empty" }, "—"));
    return wrap;
  }
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
  const x = (ts) => P + ((ts - since) / (until - since)) * (W - 2 * P);
  const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
  let d = "", prev = null;
  for (const [ts, v] of points) {
    d += `${prev === null || ts - prev > 180 ? "M" : "L"}${x(ts).toFixed(1)},${y(v).toFixed(1)}`;
    prev = ts;
  }
  wrap.append(s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": `${title} ${fmt(lo)}–${fmt(hi)} ${unit}` },
    s("line", { x1: P, x2: W - P, y1: H - P, y2: H - P, class: "axis" }),
    s("path", { d, class: "line" }),
    s("text", { x: P + 2, y: 12, class: "tick" }, `${fmt(hi)}`),
    s("text", { x: P + 2, y: H - 20, class: "tick" }, `${fmt(lo)}`),
    s("text", { x: W - P - 2, y: H - 8, class: "tick end" }, "now"),
    s("text", { x: P + 2, y: H - 7, class: "tick" }, `−${Math.round((until - since) / 60)} min`)));
  return wrap;
}

function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : (Math.round(v * 10) / 10).toString(); }
