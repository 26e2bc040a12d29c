// The overview: totals, the month-end projection, the daily trend, cost by model, by provider and
// by tag, top sessions and users, budgets and reconciliation for the chosen period (and provider
// and tag, if chosen), refreshed every 10 s without reloading the page.
import { showBreakdown } from "./breakdown.js";
import { budgetView, defaultsView } from "./budgetview.js";
import { trendChart } from "./charts.js";
import { api, currency, currencySelector, el, emptyNote, failed, fmt, refreshEvery, replace, setText, status, t,
         table } from "./common.js";
import { showProjection } from "./projection.js";
import { loadTagNames, showTagBreakdown, tagControls, tagParams, tags } from "./tagview.js";

const PERIODS = ["24h", "7d", "30d", "90d"];
const PROVIDER_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;  // as the API names providers
let period = PERIODS.includes(localStorage.getItem("tm-period")) ? localStorage.getItem("tm-period") : "7d";
// "" is every provider; anything else in the store (edited by hand, say) is not sent to the API
const stored = localStorage.getItem("tm-provider") ?? "";
let provider = PROVIDER_NAME.test(stored) ? stored : "";
let seen = [];  // the providers of the period (the unfiltered stats' by_provider): the filter's options
let generation = 0;  // answers to an older load (another period, currency, provider or tag) are dropped
let firstShown = false;
let tagNames = null;  // the tag names on recent requests, asked for once

function showPeriodButtons() {
  for (const button of document.querySelectorAll("[data-period]")) {
    button.setAttribute("aria-pressed", String(button.dataset.period === period));
  }
}

/** The filter's options: the providers seen in the period, and the chosen one, seen or not. */
function showProviderOptions() {
  const select = document.getElementById("provider");
  const names = [...new Set([...seen, ...(provider ? [provider] : [])])].sort();
  const listed = [...select.options].slice(1).map((option) => option.value);
  // rebuilt only when the list changes, so that a refresh never closes a list the reader has open
  if (names.join("\n") !== listed.join("\n")) {
    select.replaceChildren(select.options[0], ...names.map((name) => el("option", { value: name, text: name })));
  }
  select.value = provider;
}

/** Say, above the figures, which provider they are narrowed to (nothing when it is all of them). */
function showProviderNote() {
  document.getElementById("provider-note").hidden = provider === "";
  document.querySelector(".provider-filter").classList.toggle("active", provider !== "");
  setText("provider-note-text", t("provider_filtered", { provider }));
}

function chooseProvider(name) {
  provider = name;
  if (name) localStorage.setItem("tm-provider", name);
  else localStorage.removeItem("tm-provider");
  showProviderOptions();
  showProviderNote();
  refresh();
}

function showTotals(stats) {
  const totals = stats.totals;
  setText("total-requests", fmt.int(totals.requests));
  setText("total-input", fmt.int(totals.input_tokens));
  setText("total-cached", fmt.int(totals.cached_input_tokens));
  setText("total-output", fmt.int(totals.output_tokens));
  setText("total-tokens", fmt.int(totals.total_tokens));
  setText("total-cost", fmt.money(totals.cost, stats.currency));
  for (const node of document.querySelectorAll("[data-total]")) node.dataset.value = String(totals[node.dataset.total]);
  // "nothing recorded yet, here is how to start" is about the install, not about one provider or tag
  document.getElementById("empty").hidden = totals.requests > 0 || provider !== "" || tags.filter !== "";
  setText("empty-snippet", `OpenAI(base_url="${location.origin}/v1")`);
  document.getElementById("main").dataset.state = "ready";
  if (!firstShown) {
    firstShown = true;
    performance.mark("tm-numbers");
  }
}

/** Requests without a price per model ("" is no model), from /api/usage/top?by=model. */
function unpricedByModel(top) {
  return new Map(top.top.filter((row) => row.unpriced_requests > 0).map((row) => [row.id, row.unpriced_requests]));
}

function showCallouts(stats, unpriced) {
  const totals = stats.totals;
  const callouts = [];
  if (totals.unpriced_requests > 0) {
    const models = [...unpriced].map(([model, count]) => `${model || t("unknown_model")} (${fmt.int(count)})`);
    callouts.push(el("div", { class: "callout warn", role: "note" },
      el("strong", { text: t("unpriced_title", { count: fmt.int(totals.unpriced_requests) }) }),
      el("p", { text: t("unpriced_text", { models: models.join(", ") }) })));
  }
  if (totals.estimated_requests > 0) {
    callouts.push(el("div", { class: "callout", role: "note" },
      el("p", { text: t("estimated_text", { count: fmt.int(totals.estimated_requests) }) })));
  }
  replace("callouts", ...callouts);
}

function showTrend(stats) {
  const points = stats.daily.map((day) => ({
    label: fmt.day(day.date), bar: day.cost, line: day.input_tokens + day.output_tokens,
    title: `${fmt.day(day.date)}: ${fmt.money(day.cost, stats.currency)}, ${fmt.int(day.input_tokens + day.output_tokens)} ${t("tokens")}, ${fmt.int(day.requests)} ${t("requests")}`,
  }));
  trendChart(document.getElementById("trend-chart"), points, {
    barLabel: `${t("cost")} (${stats.currency})`, lineLabel: t("tokens"), ariaLabel: t("trend"),
    barFormat: (value) => fmt.money(value, stats.currency), lineFormat: fmt.compact });
  replace("trend-table", table(
    [{ label: t("day") }, { label: t("requests"), numeric: true }, { label: t("input_tokens"), numeric: true },
     { label: t("output_tokens"), numeric: true }, { label: t("cost"), numeric: true }],
    stats.daily.map((day) => [fmt.day(day.date), fmt.int(day.requests), fmt.int(day.input_tokens),
                              fmt.int(day.output_tokens), fmt.money(day.cost, stats.currency)])));
}

function showModels(stats, unpriced) {
  const key = (row) => row.model ?? "";
  showBreakdown({ chart: "model-chart", table: "model-table" }, stats.by_model, stats, {
    heading: t("cost_by_model"), label: t("model"), name: (row) => row.model ?? t("unknown_model"),
    // a model none of whose requests has a price costs nothing: say so rather than show 0
    barText: (row) => (unpriced.get(key(row)) === row.requests ? t("unpriced") : undefined),
    costText: (row) => (unpriced.has(key(row))
      ? `${fmt.money(row.cost, stats.currency)} (${t("unpriced_count", { count: fmt.int(unpriced.get(key(row))) })})`
      : undefined),
  });
}

/** Cost by provider; filtered to one provider, its single bar (the filter is said above). */
function showProviders(stats) {
  showBreakdown({ chart: "provider-chart", table: "provider-table" }, stats.by_provider, stats, {
    heading: t("cost_by_provider"), label: t("provider_label"), name: (row) => row.provider });
}

function showTop(id, page, linkTo) {
  if (!page.top.length) {
    replace(id, emptyNote(t("no_data_period")));
    return;
  }
  replace(id, table(
    [{ label: page.by === "session" ? t("session") : t("user") }, { label: t("requests"), numeric: true },
     { label: t("tokens"), numeric: true }, { label: t("cost"), numeric: true }],
    page.top.map((row) => [el("a", { href: linkTo(row.id), text: row.id, class: "ident" }), fmt.int(row.requests),
                           fmt.int(row.input_tokens + row.output_tokens), fmt.money(row.cost, page.currency)])));
}

function showBudgets(listing) {
  const ratio = (b) => Math.max(b.max_cost ? b.spent_cost / b.max_cost : 0, b.max_tokens ? b.spent_tokens / b.max_tokens : 0);
  const budgets = [...listing.budgets].sort((a, b) => ratio(b) - ratio(a));
  const shown = budgets.slice(0, 30).map(budgetView);
  if (!budgets.length) {
    shown.push(el("p", { class: "note" }, `${t("no_budgets")} `,
                  el("a", { href: "/dashboard/budgets", text: t("no_budgets_link") })));
  }
  if (budgets.length > 30) shown.push(emptyNote(t("more_budgets", { count: fmt.int(budgets.length - 30) })));
  replace("budgets", ...shown, defaultsView(listing.defaults) ?? "");
}

function showReconciliation(report) {
  const panel = document.getElementById("reconciliation-panel");
  const synced = report.days.filter((day) => day.provider !== null);
  panel.hidden = synced.length === 0;
  if (!synced.length) return;
  const fields = ["requests", "input_tokens", "cached_input_tokens", "output_tokens"];
  const columns = [{ label: "" }, ...fields.map((field) => ({ label: t(field), numeric: true }))];
  const sides = [["metered", t("metered")], ["provider", t("provider")], ["difference", t("difference")]];
  const totals = table(columns, sides.map(([side, label]) => [label, ...fields.map((field) =>
    report.totals[side] ? fmt.int(report.totals[side][field]) : "–")]), { caption: t("reconciliation_totals") });
  const differing = synced.filter((day) => fields.some((field) => day.difference[field] !== 0))
    .sort((a, b) => Math.abs(b.difference.input_tokens + b.difference.output_tokens)
                  - Math.abs(a.difference.input_tokens + a.difference.output_tokens)).slice(0, 20);
  const days = differing.length ? table(
    [{ label: t("day") }, { label: t("model") }, ...fields.map((field) => ({ label: `Δ ${t(field)}`, numeric: true }))],
    differing.map((day) => [fmt.day(day.date), day.model ?? "–", ...fields.map((field) => fmt.int(day.difference[field]))]),
    { caption: t("reconciliation_days") }) : emptyNote(t("reconciliation_match"));
  replace("reconciliation", totals, days);
}

/** The stats queries of the overview: the period and currency, and the filters chosen. */
function queries() {
  const everything = new URLSearchParams({ period, currency: currency.code });
  const top = new URLSearchParams(everything);  // the top lists take a provider, not a tag
  if (provider) top.set("provider", provider);
  const narrowed = new URLSearchParams(top);
  for (const [name, value] of tagParams()) narrowed.set(name, value);
  const month = new URLSearchParams(narrowed);  // the projection needs every day of the month whole
  month.set("period", "90d");
  return { everything: `${everything}`, top: `${top}`, query: `${narrowed}`, month: `${month}` };
}

/** Reconciliation compares OpenAI's own figures with every metered OpenAI record: it has nothing
 * to say about another provider, or about the requests of one tag. */
function showReconciliationOf(stats, current) {
  if ((provider && provider !== "openai") || tags.filter) {
    document.getElementById("reconciliation-panel").hidden = true;
    return null;
  }
  const first = stats.daily[0]?.date;
  const last = stats.daily[stats.daily.length - 1]?.date;
  return api(`/api/usage/reconciliation?start_date=${first}&end_date=${last}`)
    .then((report) => current() && showReconciliation(report));
}

async function load() {
  const mine = ++generation;
  const { everything, top, query, month } = queries();
  const current = () => mine === generation;
  // the totals first, on their own: the rest is asked for once they are on screen
  const stats = api(`/api/usage/stats?${query}`);
  const after = (request) => stats.then(request, request);
  // the provider filter offers every provider of the period: the unfiltered stats, which are these
  // very stats unless a provider or a tag is chosen
  const unfiltered = query !== everything ? after(() => api(`/api/usage/stats?${everything}`)) : stats;
  const models = after(() => api(`/api/usage/top?by=model&limit=100&${top}`));
  tagNames ??= after(loadTagNames).catch((error) => {
    tagNames = null;  // asked again at the next refresh
    throw error;
  });
  const byTag = () => (tags.name ? api(`/api/usage/stats?${query}&by_tag=${encodeURIComponent(tags.name)}`) : null);
  const parts = [
    models,
    stats.then(async (stats) => {
      if (!current()) return;
      showTotals(stats);
      showTrend(stats);
      const unpriced = unpricedByModel(await models);
      if (!current()) return;
      showCallouts(stats, unpriced);
      showModels(stats, unpriced);
      showProviders(stats);
      return showReconciliationOf(stats, current);
    }),
    after(() => api(`/api/usage/stats?${month}`)).then((stats) => current() && showProjection(stats)),
    tagNames.then(byTag).then((stats) => current() && showTagBreakdown(stats, applyTag)),
    after(() => api(`/api/usage/top?by=session&limit=10&${top}`)).then((page) => current() && showTop(
      "top-sessions", page, (id) => `/dashboard/sessions/${encodeURIComponent(id)}`)),
    after(() => api(`/api/usage/top?by=user&limit=10&${top}`)).then((page) => current() && showTop(
      "top-users", page, (id) => `/dashboard/sessions?q=${encodeURIComponent(id)}`)),
    after(() => api("/api/budgets")).then((listing) => current() && showBudgets(listing)),
    unfiltered.then((all) => {
      if (!current()) return;
      seen = all.by_provider.map((row) => row.provider);
      showProviderOptions();
    }),
  ];
  const results = await Promise.allSettled(parts);
  const problem = results.find((result) => result.status === "rejected");
  if (!current()) return true;
  if (problem) return !failed(problem.reason);
  status(null);
  setText("updated", t("updated", { time: fmt.clock(new Date()) }));
  return true;
}

currencySelector(() => refresh());
showPeriodButtons();
showProviderOptions();
showProviderNote();
document.getElementById("provider").addEventListener("change", (event) => chooseProvider(event.target.value));
document.getElementById("provider-clear").addEventListener("click", () => chooseProvider(""));
const applyTag = tagControls(() => refresh());
for (const button of document.querySelectorAll("[data-period]")) {
  button.addEventListener("click", () => {
    period = button.dataset.period;
    localStorage.setItem("tm-period", period);
    showPeriodButtons();
    refresh();
  });
}
const refresh = refreshEvery(10, load);
