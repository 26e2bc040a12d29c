// SVG charts drawn by hand: a daily trend (bars and a line on two axes) and horizontal bars.
// Each chart is sized to its container and redrawn when the window is resized; every bar has a
// <title> (its exact figures), and every page puts a table beside the chart.

const NS = "http://www.w3.org/2000/svg";
const drawn = new Map();  // container -> the function that draws it again

function node(tag, attributes = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  element.append(...children);
  return element;
}

function titled(element, text) {
  element.append(node("title", {}, text));
  return element;
}

/** A round upper bound for an axis (1, 2, 2.5 or 5 times a power of ten) and its tick step. */
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { max: 1, step: 1 / ticks };
  const rough = max / ticks;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return { max: step * ticks, step };
}

function widthOf(container) {
  return Math.max(280, Math.floor(container.clientWidth || container.parentElement?.clientWidth || 600));
}

function remember(container, draw) {
  drawn.set(container, draw);
  draw();
}

let resizeTimer;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => drawn.forEach((draw, container) => container.isConnected && draw()), 150);
});

/**
 * Daily bars (`bar` of each point, left axis) with a line (`line`, right axis).
 * points: [{label, bar, line, title}]; options: {barLabel, lineLabel, barFormat, lineFormat, height, ariaLabel}
 */
export function trendChart(container, points, options) {
  remember(container, () => drawTrend(container, points, options));
}

function drawTrend(container, points, { barLabel, lineLabel, barFormat, lineFormat, height = 240, ariaLabel }) {
  const width = widthOf(container);
  const margin = { top: 14, right: lineLabel ? 58 : 12, bottom: 30, left: 62 };
  const inner = { w: width - margin.left - margin.right, h: height - margin.top - margin.bottom };
  const bars = niceScale(Math.max(0, ...points.map((p) => p.bar)));
  const line = niceScale(Math.max(0, ...points.map((p) => p.line ?? 0)));
  const svg = node("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "trend",
                            "aria-label": ariaLabel, "data-points": points.length });
  const plot = node("g", { transform: `translate(${margin.left},${margin.top})` });
  svg.append(plot);
  const y = (value, scale) => inner.h - (value / scale.max) * inner.h;
  for (let tick = 0; tick <= bars.max / bars.step + 1e-9; tick++) {
    const value = tick * bars.step;
    const at = y(value, bars);
    plot.append(node("line", { x1: 0, x2: inner.w, y1: at, y2: at, class: "grid" }));
    plot.append(node("text", { x: -6, y: at + 4, "text-anchor": "end", class: "axis" }, barFormat(value)));
    if (lineLabel) {
      plot.append(node("text", { x: inner.w + 6, y: at + 4, class: "axis line-axis" },
                       lineFormat(tick * line.step)));
    }
  }
  const band = inner.w / Math.max(points.length, 1);
  const labelEvery = Math.max(1, Math.ceil((points.length * 52) / inner.w));  // a date label is ~45 px wide
  const path = [];
  points.forEach((point, i) => {
    const barHeight = inner.h - y(point.bar, bars);
    const x = i * band;
    plot.append(titled(node("rect", { x: x + band * 0.15, y: inner.h - barHeight, width: Math.max(1, band * 0.7),
                                      height: Math.max(0, barHeight), class: "bar" }), point.title));
    if (i % labelEvery === 0) {
      plot.append(node("text", { x: x + band / 2, y: inner.h + 18, "text-anchor": "middle", class: "axis" },
                       point.label));
    }
    if (lineLabel) path.push(`${i ? "L" : "M"}${(x + band / 2).toFixed(1)},${y(point.line, line).toFixed(1)}`);
  });
  if (lineLabel && points.length) {
    plot.append(node("path", { d: path.join(""), class: "line" }));
    points.forEach((point, i) => plot.append(titled(node("circle", {
      cx: i * band + band / 2, cy: y(point.line, line), r: points.length > 40 ? 2 : 3, class: "dot" }), point.title)));
  }
  const legend = document.createElement("p");
  legend.className = "legend";
  legend.append(swatch("bar", barLabel));
  if (lineLabel) legend.append(swatch("line", lineLabel));
  container.replaceChildren(svg, legend);
}

function swatch(kind, text) {
  const item = document.createElement("span");
  const mark = document.createElement("span");
  mark.className = `swatch ${kind}`;
  item.append(mark, text);
  return item;
}

/** Horizontal bars: items [{label, value, text, title}], longest first as given. */
export function barChart(container, items, { ariaLabel } = {}) {
  remember(container, () => drawBars(container, items, ariaLabel));
}

function drawBars(container, items, ariaLabel) {
  const width = widthOf(container);
  const row = 26;
  const labelWidth = Math.min(220, Math.floor(width * 0.38));
  const textWidth = 96;
  const height = Math.max(row, items.length * row) + 4;
  const max = Math.max(0, ...items.map((item) => item.value)) || 1;
  const svg = node("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars",
                            "aria-label": ariaLabel ?? "", "data-points": items.length });
  const room = width - labelWidth - textWidth - 12;
  items.forEach((item, i) => {
    const top = i * row + 4;
    const fits = Math.max(4, Math.floor((labelWidth - 8) / 7));  // ~7 px a character at 12 px
    const label = item.label.length > fits ? `${item.label.slice(0, fits - 1)}…` : item.label;
    svg.append(titled(node("text", { x: labelWidth - 8, y: top + 14, "text-anchor": "end", class: "label" }, label),
                      item.label));
    svg.append(titled(node("rect", { x: labelWidth, y: top + 2, height: row - 10,
                                     width: Math.max(item.value > 0 ? 2 : 0, (item.value / max) * room),
                                     class: "bar" }), item.title));
    svg.append(node("text", { x: labelWidth + Math.max(2, (item.value / max) * room) + 6, y: top + 14,
                              class: "value" }, item.text));
  });
  container.replaceChildren(svg);
}
