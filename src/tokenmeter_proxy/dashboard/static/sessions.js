// Sessions, newest first, 50 to a page, searchable by session id prefix or user id; the search
// and the page are kept in the address (shareable), the numbers refreshed every 10 s.
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

function show(listing) {
  const first = page * PAGE;
  if (!listing.sessions.length) {
    replace("sessions", emptyNote(search ? t("no_sessions_found", { q: search }) : t("no_sessions")));
  } else {
    replace("sessions", table(
      [{ label: t("session") }, { label: t("first_seen") }, { label: t("last_seen") },
       { label: t("requests"), numeric: true }, { label: t("tokens"), numeric: true }, { label: t("cost"), numeric: true }],
      listing.sessions.map((session) => [
        el("a", { href: `/dashboard/sessions/${encodeURIComponent(session.session_id)}`, text: session.session_id,
                  class: "ident" }),
        fmt.moment(session.first_seen), fmt.moment(session.last_seen), fmt.int(session.requests),
        fmt.int(session.input_tokens + session.output_tokens), currency.show(session.cost)])));
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
