// Sessions, newest first, 50 to a page, searchable by session id prefix or user id, each with its
// provider mix (its cost per provider, from the sessions API); the search and the page are kept
// in the address (shareable), the numbers refreshed every 10 s.
import { api, currency, currencySelector, el, emptyNote, failed, fmt, refreshEvery, replace, setText, status, t,
         table } from "./common.js";

const PAGE = 50;
const params = new URLSearchParams(location.search);
let search = params.get("q") ?? "";
let page = Math.max(0, Number.parseInt(params.get("page") ?? "0", 10) || 0);
let generation = 0;

function remember() {
  const query = new URLSearchParams();
  if (search) query.set("q", search);
  if (page) query.set("page", String(page));
  history.replaceState(null, "", query.size ? `?${query}` : location.pathname);
}

const KNOWN = ["openai", "anthropic", "google"];  // each provider keeps its colour on every row
const shown = 2;  // providers named in the text; the rest are counted (all are in its title)

function colour(provider) {
  const known = KNOWN.indexOf(provider);
  return known >= 0 ? known : 3;
}

function percent(share) {
  return share > 0 && share < 0.005 ? `<${fmt.percent(0.01)}` : fmt.percent(share);
}

/** "openai 70% · anthropic 30%": each provider's share of the session's cost (of its requests
 * when nothing in it has a price), biggest first, with a bar of the same shares beside it. */
function providerMix(providers) {
  if (!providers?.length) return "–";
  const cost = providers.reduce((sum, row) => sum + row.cost, 0);
  const requests = providers.reduce((sum, row) => sum + row.requests, 0);
  const share = (row) => (cost > 0 ? row.cost / cost : row.requests / requests);
  const named = providers.map((row) => `${row.provider} ${percent(share(row))}`);
  const text = named.slice(0, shown).join(" · ") + (named.length > shown ? ` · +${named.length - shown}` : "");
  const bar = el("span", { class: "mix-bar", "aria-hidden": "true" }, ...providers.map((row) => {
    const part = el("span", { class: `mix-${colour(row.provider)}` });
    part.style.width = `${(share(row) * 100).toFixed(1)}%`;
    return part;
  }));
  return el("span", { class: "mix", title: named.join(" · ") }, bar, el("span", { class: "mix-text", text }));
}

function show(listing) {
  const first = page * PAGE;
  if (!listing.sessions.length) {
    replace("sessions", emptyNote(search ? t("no_sessions_found", { q: search }) : t("no_sessions")));
  } else {
    replace("sessions", table(
      [{ label: t("session") }, { label: t("first_seen") }, { label: t("last_seen") },
       { label: t("requests"), numeric: true }, { label: t("tokens"), numeric: true }, { label: t("cost"), numeric: true },
       { label: t("provider_mix") }],
      listing.sessions.map((session) => [
        el("a", { href: `/dashboard/sessions/${encodeURIComponent(session.session_id)}`, text: session.session_id,
                  class: "ident" }),
        fmt.moment(session.first_seen), fmt.moment(session.last_seen), fmt.int(session.requests),
        fmt.int(session.input_tokens + session.output_tokens), currency.show(session.cost),
        providerMix(session.providers)])));
  }
  setText("page-info", listing.total ? t("page_info", {
    first: fmt.int(first + 1), last: fmt.int(first + listing.sessions.length), total: fmt.int(listing.total) }) : "");
  document.getElementById("previous").disabled = page === 0;
  document.getElementById("next").disabled = first + listing.sessions.length >= listing.total;
  document.getElementById("main").dataset.state = "ready";
}

async function load() {
  const mine = ++generation;
  const query = new URLSearchParams({ limit: String(PAGE), offset: String(page * PAGE) });
  if (search) query.set("q", search);
  try {
    const listing = await api(`/api/usage/sessions?${query}`);
    if (mine !== generation) return true;
    if (!listing.sessions.length && page > 0 && listing.total > 0) {  // the page went away: to the last one
      page = Math.floor((listing.total - 1) / PAGE);
      remember();
      return load();
    }
    show(listing);
    status(null);
    return true;
  } catch (error) {
    return mine !== generation || !failed(error);
  }
}

const input = document.getElementById("q");
input.value = search;
document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  search = input.value.trim();
  page = 0;
  remember();
  refresh();
});
document.getElementById("previous").addEventListener("click", () => { page = Math.max(0, page - 1); remember(); refresh(); });
document.getElementById("next").addEventListener("click", () => { page += 1; remember(); refresh(); });
currencySelector(() => refresh());
const refresh = refreshEvery(10, load);
