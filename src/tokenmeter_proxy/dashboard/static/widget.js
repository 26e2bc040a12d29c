// The session widget a chat app shows in its sidebar: the session's tokens and cost, and a
// 7- or 30-day trend of its user, refreshed every 10 s. It reads only its own signed endpoint;
// once the link expires it says so, and tells the embedding page (postMessage) to fetch a new one.
import { trendChart } from "./charts.js";
import { config, fmt, refreshEvery, replace, setText, status, t, table } from "./common.js";

let days = 7;
let figures = null;

function showTrend() {
  const daily = figures.trend.daily.slice(-days);
  const code = figures.currency;
  setText("w-trend-title", figures.trend.of === "user" ? t("trend_user") : t("trend_session"));
  trendChart(document.getElementById("w-chart"), daily.map((day) => ({
    label: fmt.day(day.date), bar: day.input_tokens + day.output_tokens,
    title: `${fmt.day(day.date)}: ${fmt.int(day.input_tokens + day.output_tokens)} ${t("tokens")}, ${fmt.money(day.cost, code)}`,
  })), { barLabel: t("tokens"), barFormat: fmt.compact, height: 150, ariaLabel: t("trend_user") });
  replace("w-table", table(
    [{ label: t("day") }, { label: t("tokens"), numeric: true }, { label: t("cost"), numeric: true }],
    daily.map((day) => [fmt.day(day.date), fmt.int(day.input_tokens + day.output_tokens), fmt.money(day.cost, code)])));
}

function show() {
  const totals = figures.totals;
  setText("w-tokens", fmt.int(totals.total_tokens));
  setText("w-input", fmt.int(totals.input_tokens));
  setText("w-output", fmt.int(totals.output_tokens));
  setText("w-cost", fmt.money(totals.cost, figures.currency));
  setText("w-requests", fmt.int(totals.requests));
  setText("w-updated", t("updated", { time: fmt.clock(new Date()) }));
  showTrend();
}

function expired() {
  status("error", t("widget_denied"));
  window.parent?.postMessage({ type: "tokenmeter:widget-expired", session_id: config.session_id }, "*");
  return false;
}

async function load() {
  if (Date.now() / 1000 >= config.expires) return expired();  // no request the proxy would refuse
  let response;
  try {
    response = await fetch(config.data_url, { credentials: "omit", headers: { accept: "application/json" } });
  } catch {
    status("error", t("network_error"));
    return true;
  }
  if (response.status === 403) return expired();
  if (!response.ok) {
    status("error", t("load_failed", { message: response.statusText || response.status }));
    return true;
  }
  figures = await response.json();
  status(null);
  show();
  return true;
}

for (const button of document.querySelectorAll("[data-days]")) {
  button.addEventListener("click", () => {
    days = Number(button.dataset.days);
    for (const other of document.querySelectorAll("[data-days]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    if (figures) showTrend();
  });
}

refreshEvery(10, load);
