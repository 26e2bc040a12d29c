// One session: its totals, the budgets that apply to it, every request it made (newest first),
// and a widget link for it; refreshed every 10 s.
import { budgetView, defaultsView } from "./budgetview.js";
import { api, ApiError, config, currency, currencySelector, el, emptyNote, failed, fmt, refreshEvery, replace,
         setText, status, t, table } from "./common.js";

const id = config.session_id;
const LIMIT = 1000;
let detail = null;

function showTotals(totals) {
  setText("total-requests", fmt.int(totals.requests));
  setText("total-input", fmt.int(totals.input_tokens));
  setText("total-cached", fmt.int(totals.cached_input_tokens));
  setText("total-output", fmt.int(totals.output_tokens));
  setText("total-cost", currency.show(totals.cost));
  const callouts = [];
  if (totals.unpriced_requests > 0) {
    callouts.push(el("div", { class: "callout warn", role: "note" },
      el("strong", { text: t("unpriced_title", { count: fmt.int(totals.unpriced_requests) }) }),
      el("p", { text: t("unpriced_text", { models: [...new Set(detail.records.filter((r) => r.cost === null)
        .map((r) => r.model ?? t("unknown_model")))].join(", ") }) })));
  }
  replace("callouts", ...callouts);
}

function showRecords(records, totals) {
  setText("records-note", records.length < totals.requests
    ? t("records_newest", { shown: fmt.int(records.length), total: fmt.int(totals.requests) }) : "");
  replace("records", table(
    [{ label: t("time") }, { label: t("provider_label") }, { label: t("model") }, { label: t("endpoint") },
     { label: t("user") }, { label: t("input_tokens"), numeric: true }, { label: t("cached"), numeric: true },
     { label: t("output_tokens"), numeric: true }, { label: t("cost"), numeric: true }, { label: t("status") },
     { label: t("latency_ms"), numeric: true }, { label: t("source") }],
    records.map((r) => [fmt.moment(r.created_at), r.provider ?? "–", r.model ?? "–",
                        r.endpoint + (r.streamed ? " ⇣" : ""), r.user_id ?? "–", fmt.int(r.input_tokens),
                        fmt.int(r.cached_input_tokens), fmt.int(r.output_tokens),
                        r.cost === null ? t("unpriced") : currency.show(r.cost), r.status_code ?? "–",
                        fmt.int(r.latency_ms), t(`source_${r.usage_source}`)]),
    { rowAttributes: (i) => ({ "data-record": records[i].id }) }));
}

function showBudgets(listing, records) {
  const users = new Set(records.map((r) => r.user_id).filter(Boolean));
  const keys = new Set(records.map((r) => r.api_key_id).filter(Boolean));
  const tags = new Set(records.flatMap((r) => Object.entries(r.tags ?? {}).map(([name, value]) => `${name}:${value}`)));
  const applying = listing.budgets.filter((b) => b.scope === "global"
    || (b.scope === "session" && b.subject === id) || (b.scope === "user" && users.has(b.subject))
    || (b.scope === "key" && keys.has(b.subject)) || (b.scope === "tag" && tags.has(b.subject)));
  const shown = applying.map(budgetView);
  if (!applying.length) shown.push(emptyNote(t("no_budgets_session")));
  replace("budgets", ...shown, defaultsView(listing.defaults) ?? "");
}

async function load() {
  try {
    const [found, listing] = await Promise.all([
      api(`/api/usage/sessions/${encodeURIComponent(id)}?limit=${LIMIT}`).catch((error) => {
        if (error instanceof ApiError && error.status === 404) return null;
        throw error;
      }),
      api("/api/budgets")]);
    detail = found ?? { totals: { requests: 0, input_tokens: 0, cached_input_tokens: 0, output_tokens: 0, cost: 0,
                                  unpriced_requests: 0 }, records: [] };
    document.getElementById("empty").hidden = found !== null;
    showTotals(detail.totals);
    showRecords(detail.records, detail.totals);
    showBudgets(listing, detail.records);
    document.getElementById("main").dataset.state = "ready";
    status(null);
    return true;
  } catch (error) {
    return !failed(error);
  }
}

document.getElementById("mint").addEventListener("click", async () => {
  try {
    const link = await api("/api/widget-links", { method: "POST", body: { session_id: id } });
    const anchor = document.getElementById("widget-link");
    anchor.href = link.url;
    anchor.textContent = link.url;
    anchor.hidden = false;
    status("notice", t("widget_link_made", { when: fmt.moment(link.expires_at) }));
  } catch (error) {
    failed(error);
  }
});
currencySelector(() => detail && (showTotals(detail.totals), showRecords(detail.records, detail.totals)));
refreshEvery(10, load);
