// The sidebar a chat app embeds, for a session link or a user link: the current session's live
// tokens and cost (session links), the usage trend (cost per day over 7 or 30 days, tokens as the
// other view) and the recent sessions (choose one to see its figures in place).
// It reads only its own signed endpoint: every 10 s, and at once when the embedding page posts
// {type: "tokenmeter:refresh"} (after each reply). Once the link expires it says so, and tells
// the embedding page (postMessage) to fetch a new one.
import { trendChart } from "./charts.js";
import { config, fmt, refreshEvery, replace, setText, status, t, table } from "./common.js";
import { showRecent } from "./recent.js";

const view = { days: 7, measure: "cost", chosen: null };
let figures = null;
let shownSessions = "";

const tokensOf = (day) => day.input_tokens + day.output_tokens;

function showTrend() {
  const daily = figures.trend.daily.slice(-view.days);
  const code = figures.currency;
  const byCost = view.measure === "cost";
  const cost = daily.reduce((sum, day) => sum + day.cost, 0);
  const tokens = daily.reduce((sum, day) => sum + tokensOf(day), 0);
  setText("w-trend-of", t(figures.trend.of === "user" ? "trend_of_user" : "trend_of_session", {
    days: fmt.int(view.days), cost: fmt.money(cost, code), tokens: fmt.int(tokens) }));
  const label = byCost ? `${t("cost")} (${code})` : t("tokens");
  trendChart(document.getElementById("w-chart"), daily.map((day) => ({
    label: fmt.day(day.date), bar: byCost ? day.cost : tokensOf(day),
    title: `${fmt.day(day.date)}: ${fmt.money(day.cost, code)}, ${fmt.int(tokensOf(day))} ${t("tokens")}`,
  })), { barLabel: label, barFormat: byCost ? (value) => fmt.money(value, code) : fmt.compact, height: 150,
         ariaLabel: `${t("usage_trend")}: ${label}` });
  replace("w-table", table(
    [{ label: t("day") }, { label: t("cost"), numeric: true }, { label: t("tokens"), numeric: true }],
    daily.map((day) => [fmt.day(day.date), fmt.money(day.cost, code), fmt.int(tokensOf(day))])));
}

function showCurrent() {
  const totals = figures.totals;
  setText("w-session-id", figures.session_id);
  setText("w-tokens", fmt.int(totals.total_tokens));
  setText("w-input", fmt.int(totals.input_tokens));
  setText("w-output", fmt.int(totals.output_tokens));
  setText("w-cost", fmt.money(totals.cost, figures.currency));
  setText("w-requests", fmt.int(totals.requests));
}

function choose(sessionId) {
  view.chosen = sessionId;
  showSessions(true);
}

function showSessions(force = false) {
  const key = JSON.stringify([figures.sessions, view.chosen]);
  if (!force && key === shownSessions) return;  // unchanged: keep the list as the reader left it
  shownSessions = key;
  showRecent(document.getElementById("w-sessions"), figures.sessions, {
    current: figures.kind === "session" ? figures.session_id : null, chosen: view.chosen,
    currency: figures.currency, onChoose: choose });
}

function show() {
  if (figures.kind === "session") showCurrent();
  showTrend();
  showSessions();
  setText("w-updated", t("updated", { time: fmt.clock(new Date()) }));
  document.getElementById("main").dataset.state = "ready";
}

function expired() {
  status("error", t("widget_denied"));
  const message = { type: "tokenmeter:widget-expired", kind: config.kind };
  if (config.kind === "session") message.session_id = config.session_id;
  window.parent?.postMessage(message, "*");
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

function toggle(attribute, key, parse) {
  const buttons = document.querySelectorAll(`[${attribute}]`);
  for (const button of buttons) {
    button.addEventListener("click", () => {
      view[key] = parse(button.getAttribute(attribute));
      for (const other of buttons) other.setAttribute("aria-pressed", String(other === button));
      if (figures) showTrend();
    });
  }
}

toggle("data-days", "days", Number);
toggle("data-view", "measure", String);
const refresh = refreshEvery(10, load);
window.addEventListener("message", (event) => {
  // the embedding page, after a reply: the figures now, not in up to 10 s
  if (event.source === window.parent && event.data?.type === "tokenmeter:refresh") refresh();
});
