// The widget's recent sessions: a scrollable list, newest activity first, each a button with its
// id, cost and time (the current session marked). Choosing one opens its figures in place, under
// its button; choosing it again closes them.
import { el, fmt, t } from "./common.js";

function figures(session, currency) {
  const row = (label, value) => [el("dt", { text: label }), el("dd", { text: value })];
  return el("dl", { class: "wfigures" },
    ...row(t("tokens"), `${fmt.int(session.input_tokens + session.output_tokens)} (${t("input")} `
                        + `${fmt.int(session.input_tokens)} · ${t("output")} ${fmt.int(session.output_tokens)})`),
    ...row(t("cost"), fmt.money(session.cost, currency)),
    ...row(t("requests"), fmt.int(session.requests)),
    ...row(t("last_activity"), session.last_seen ? fmt.moment(session.last_seen) : "–"));
}

function item(session, { current, open, currency, index, onChoose }) {
  const detail = `w-session-${index}`;
  const button = el("button", {
    type: "button", class: "wsession", "data-session": session.session_id, "aria-expanded": String(open),
    "aria-controls": detail, "aria-current": current ? "true" : undefined },
  el("span", { class: "wname" }, el("code", { class: "ident", text: session.session_id }),
     current ? el("span", { class: "badge current", text: t("current_mark") }) : null),
  el("span", { class: "wmeta" }, el("span", { class: "wcost", text: fmt.money(session.cost, currency) }),
     session.last_seen ? el("time", { datetime: session.last_seen, text: fmt.recent(session.last_seen) }) : null));
  button.addEventListener("click", () => onChoose(open ? null : session.session_id));
  return el("li", { class: current ? "current" : undefined }, button,
            el("div", { id: detail, class: "wdetail", role: "region", "aria-label": session.session_id,
                        hidden: !open }, open ? figures(session, currency) : null));
}

/**
 * The list in `container`: `sessions` as the widget's endpoint gives them; `current` the link's
 * session (null for a user link), `chosen` the one whose figures are open; `onChoose(id | null)`.
 */
export function showRecent(container, sessions, { current, chosen, currency, onChoose }) {
  if (!sessions.length) {
    container.replaceChildren(el("li", { class: "note", text: t("no_recent") }));
    return;
  }
  const focused = document.activeElement?.dataset?.session;  // a rebuilt list keeps the reader's place
  container.replaceChildren(...sessions.map((session, index) => item(session, {
    current: session.session_id === current, open: session.session_id === chosen, currency, index, onChoose })));
  if (focused !== undefined) {
    [...container.querySelectorAll("button.wsession")].find((button) => button.dataset.session === focused)?.focus();
  }
}
