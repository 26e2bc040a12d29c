// What every page shares: its configuration (rendered by the server), strings, number and date
// formatting for the page's locale, calls to the admin API, DOM helpers and the status line.
// Data is always put into the page as text (textContent), never as HTML.

export const config = JSON.parse(document.getElementById("tm-config").textContent);
const locale = config.locale;

export function t(key, values = {}) {
  const text = config.strings[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

const integers = new Intl.NumberFormat(locale);
const compact = new Intl.NumberFormat(locale, { notation: "compact", maximumFractionDigits: 1 });
const percent = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 0 });
const days = new Intl.DateTimeFormat(locale, { month: "short", day: "numeric", timeZone: "UTC" });
const moments = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "medium" });
const clock = new Intl.DateTimeFormat(locale, { timeStyle: "medium" });
const months = new Intl.DateTimeFormat(locale, { month: "long", year: "numeric", timeZone: "UTC" });
const todayTimes = new Intl.DateTimeFormat(locale, { timeStyle: "short" });
const recentTimes = new Intl.DateTimeFormat(locale, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
const moneyFormats = new Map();

export const fmt = {
  int: (n) => integers.format(n ?? 0),
  compact: (n) => compact.format(n ?? 0),
  percent: (x) => percent.format(x),
  day: (iso) => days.format(new Date(`${iso}T00:00:00Z`)),
  moment: (iso) => moments.format(new Date(iso)),
  clock: (date) => clock.format(date),
  month: (date) => months.format(date),
  /** a moment of the last days, briefly: its time today, its day and time before */
  recent(iso) {
    const date = new Date(iso);
    return (date.toDateString() === new Date().toDateString() ? todayTimes : recentTimes).format(date);
  },
  money(amount, currency) {
    if (amount === null || amount === undefined) return "–";
    const small = Math.abs(amount) < 1 && amount !== 0;
    const key = `${currency}/${small}`;
    if (!moneyFormats.has(key)) {
      try {
        moneyFormats.set(key, new Intl.NumberFormat(locale, {
          style: "currency", currency, minimumFractionDigits: small ? 4 : 2, maximumFractionDigits: small ? 4 : 2 }));
      } catch {  // a code Intl does not know: the number and the code
        const digits = small ? 4 : 2;
        const plain = new Intl.NumberFormat(locale, { minimumFractionDigits: digits, maximumFractionDigits: digits });
        moneyFormats.set(key, { format: (n) => `${plain.format(n)} ${currency}` });
      }
    }
    return moneyFormats.get(key).format(amount);
  },
};

// The reader's currency: one of the pricing file's, remembered in this browser.
const RATES = config.rates || {};
export const currency = {
  code: RATES[localStorage.getItem("tm-currency")] ? localStorage.getItem("tm-currency") : config.base_currency,
  /** an amount in the pricing file's currency, shown in the chosen one */
  show(amountInBase) {
    if (amountInBase === null || amountInBase === undefined) return "–";
    return fmt.money(amountInBase * Number(RATES[this.code] ?? 1), this.code);
  },
};

export function currencySelector(onChange) {
  const select = document.getElementById("currency");
  if (!select) return;
  for (const code of Object.keys(RATES)) select.append(el("option", { value: code, text: code }));
  select.value = currency.code;
  select.addEventListener("change", () => {
    currency.code = select.value;
    localStorage.setItem("tm-currency", select.value);
    onChange();
  });
}

export class ApiError extends Error {
  /** `param`: the field the API names as at fault (its error's `param`), if any */
  constructor(status, message, param = null) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

/** A call to the admin API with the sign-in cookie; state-changing calls carry the CSRF token. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") {
    headers["x-tokenmeter-csrf"] = config.csrf;
    headers["content-type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, { method, headers, credentials: "same-origin",
                                   body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, t("network_error"));
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, data?.error?.message || response.statusText, data?.error?.param ?? null);
  }
  return data;
}

/** An element with attributes (`text` sets its text, `class` its class) and children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** A table: columns `[{label, numeric}]`, rows of cells (text or nodes); `rowAttributes(i)` optional. */
export function table(columns, rows, { caption, rowAttributes } = {}) {
  const head = el("tr", {}, ...columns.map((column) => el("th", {
    scope: "col", class: column.numeric ? "num" : undefined, text: column.label })));
  const body = rows.map((cells, i) => el("tr", rowAttributes ? rowAttributes(i) : {}, ...cells.map((cell, j) =>
    el("td", { class: columns[j].numeric ? "num" : undefined }, cell instanceof Node ? cell : String(cell)))));
  return el("table", {}, caption ? el("caption", { text: caption }) : null, el("thead", {}, head),
            el("tbody", {}, ...body));
}

export function replace(id, ...nodes) {
  document.getElementById(id).replaceChildren(...nodes);
}

export function setText(id, text) {
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

/** The status line: errors and notices, with an optional link. */
export function status(kind, text, link) {
  const line = document.getElementById("status");
  if (!line) return;
  if (!kind) {
    line.hidden = true;
    line.replaceChildren();
    return;
  }
  line.className = `status ${kind}`;
  line.replaceChildren(el("span", { text }), ...(link ? [el("a", { href: link.href, text: link.text })] : []));
  line.hidden = false;
}

/** Show why a load failed; true when the reader must sign in again (stop refreshing then). */
export function failed(error) {
  const main = document.getElementById("main");
  if (main) main.dataset.state = "stale";  // what is on screen may belong to an earlier period or moment
  if (error instanceof ApiError && error.status === 401) {
    status("error", t("signed_out"), { href: location.pathname + location.search, text: t("sign_in") });
    return true;
  }
  status("error", t("load_failed", { message: error.message }));
  return false;
}

/** Run `load` now and every `seconds` (not while the page is hidden); stop once it returns false. */
export function refreshEvery(seconds, load) {
  let timer;
  let stopped = false;
  const run = async () => {
    clearTimeout(timer);
    if (stopped || document.hidden) return;
    if ((await load()) === false) {
      stopped = true;
      return;
    }
    clearTimeout(timer);
    timer = setTimeout(run, seconds * 1000);
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
  run();
  return run;
}

export function emptyNote(text) {
  return el("p", { class: "note", text });
}
