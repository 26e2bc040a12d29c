// The budgets page: every budget in a table (its limit, its spend as a bar, its warning state and
// when it runs out), and a form that creates, edits and deletes them through the budgets API with
// the page's CSRF token. A refused save shows the API's own message beside the field it names and
// changes nothing. The table refreshes every 10 s.
import { budgetState, defaultsView, forecastText, limitsOf, spendMeter } from "./budgetview.js";
import { api, ApiError, config, el, emptyNote, failed, fmt, refreshEvery, replace, setText, status, t,
         table } from "./common.js";

const form = document.getElementById("budget-form");
const field = (name) => form.elements.namedItem(name);
let editing = null;  // the budget the form is editing, or null for a new one
let shown = "";  // the listing on screen, so that a refresh that changes nothing rebuilds nothing

function describe(budget) {
  return `${t(`scope_${budget.scope}`)} ${budget.subject} (${t(`budget_period_${budget.period}`)})`;
}

function stateCell(budget) {
  const state = budgetState(budget);
  const percent = fmt.percent(budget.warn_at ?? 0.8);
  return el("span", { class: `state ${state}`, text: t(`state_${state}`, { percent }) });
}

function forecastCell(budget) {
  const forecast = forecastText(budget);
  if (forecast) return el("span", { class: "forecast", text: fmt.moment(budget.forecast_exhausted_at) });
  return el("span", { class: "muted", text: budgetState(budget) === "over" ? t("forecast_over") : t("forecast_none") });
}

function spendCell(budget) {
  return el("div", { class: "spend" }, ...limitsOf(budget).map((limit) => el("div", { class: "spend-line" },
    spendMeter(limit, budget.warn_at),
    el("span", { class: "spend-text", text: t("spent_line", {
      spent: limit.show(limit.spent), percent: fmt.percent(limit.max > 0 ? limit.spent / limit.max : 1) })
      + (limit.reserved > 0 ? ` · ${t("reserved_line", { reserved: limit.show(limit.reserved) })}` : "") }))));
}

function actions(budget) {
  const what = describe(budget);
  const edit = el("button", { type: "button", "aria-label": t("edit_label", { what }), text: t("edit") });
  const remove = el("button", { type: "button", class: "danger", "aria-label": t("delete_label", { what }),
                                text: t("delete") });
  edit.addEventListener("click", () => startEditing(budget));
  remove.addEventListener("click", () => removeBudget(budget));
  return el("div", { class: "row-actions" }, edit, remove);
}

function showBudgets(listing) {
  const budgets = listing.budgets;
  if (!budgets.length) {
    replace("budget-table", emptyNote(t("no_budgets_page")));
  } else {
    replace("budget-table", table(
      [{ label: t("col_scope") }, { label: t("col_subject") }, { label: t("col_period") },
       { label: t("col_limit"), numeric: true }, { label: t("col_spent") }, { label: t("col_state") },
       { label: t("col_forecast") }, { label: t("col_actions") }],
      budgets.map((budget) => [
        t(`scope_${budget.scope}`), el("code", { class: "ident", text: budget.subject }),
        t(`budget_period_${budget.period}`),
        el("div", { class: "limits" }, ...limitsOf(budget).map((limit) => el("div", { text: limit.show(limit.max) }))),
        spendCell(budget), stateCell(budget), forecastCell(budget), actions(budget)]),
      { rowAttributes: (i) => ({ "data-budget": budgets[i].id, class: `budget-row ${budgetState(budgets[i])}` }) }));
  }
  const defaults = defaultsView(listing.defaults);
  const line = document.getElementById("budget-defaults");
  line.hidden = !defaults;
  line.textContent = defaults ? defaults.textContent : "";
}

async function load() {
  try {
    const listing = await api("/api/budgets");
    const text = JSON.stringify(listing);
    if (text !== shown) {
      shown = text;
      showBudgets(listing);
    }
    document.getElementById("main").dataset.state = "ready";
    setText("updated", t("updated", { time: fmt.clock(new Date()) }));
    status(null);
    return true;
  } catch (error) {
    return !failed(error);
  }
}

// ---------------------------------------------------------------- the form

function showSubjectHint() {
  const scope = field("scope").value;
  const subject = field("subject");
  subject.readOnly = scope === "global";
  if (scope === "global") subject.value = "*";
  else if (subject.value === "*") subject.value = "";
  subject.placeholder = t(`subject_placeholder_${scope}`);
  setText("h-subject", t(`subject_hint_${scope}`));
}

function clearErrors() {
  for (const message of form.querySelectorAll(".field-error")) {
    message.hidden = true;
    message.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  setText("form-status", "");
  document.getElementById("form-status").className = "form-status";
}

function formStatus(kind, text) {
  const line = document.getElementById("form-status");
  line.className = `form-status ${kind}`;
  line.textContent = text;
}

/** The API's own message beside the field it names (the form's status line when it names none). */
function showRefusal(error) {
  const message = document.getElementById(`e-${error.param}`);
  const input = error.param ? field(error.param) : null;
  if (message && input) {
    message.textContent = error.message;
    message.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    formStatus("error", t("budget_refused"));
  } else {
    formStatus("error", `${t("budget_refused")} ${error.message}`);
  }
}

function resetForm() {
  editing = null;
  form.reset();
  field("scope").value = "user";  // the commonest budget: a user's month
  field("period").value = "month";
  field("warn_at").value = config.default_warn_at;
  setText("form-title", t("budget_new"));
  document.getElementById("b-cancel").hidden = true;
  showSubjectHint();
}

function startEditing(budget) {
  clearErrors();
  editing = budget;
  field("scope").value = budget.scope;
  showSubjectHint();
  field("subject").value = budget.subject;
  field("period").value = budget.period;
  field("max_cost").value = budget.max_cost ?? "";
  field("max_tokens").value = budget.max_tokens ?? "";
  field("warn_at").value = budget.warn_at ?? config.default_warn_at;
  setText("form-title", t("budget_edit", { what: describe(budget) }));
  document.getElementById("b-cancel").hidden = false;
  document.getElementById("budget-editor").scrollIntoView({ block: "nearest" });
  field("max_cost").focus();
}

/** A number as typed, for the API to judge: a decimal comma read as a point; empty is no value. */
function typed(name) {
  const text = field(name).value.trim();
  if (text === "") return null;
  return /^\d+,\d+$/.test(text) ? text.replace(",", ".") : text;
}

function payload() {
  const scope = field("scope").value;
  return { scope, subject: scope === "global" ? "*" : field("subject").value.trim(), period: field("period").value,
           max_cost: typed("max_cost"), max_tokens: typed("max_tokens"), warn_at: typed("warn_at") };
}

async function save(event) {
  event.preventDefault();
  clearErrors();
  const body = payload();
  try {
    const saved = await api("/api/budgets", { method: "PUT", body });
    resetForm();
    formStatus("notice", t("budget_saved", { what: describe(saved) }));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      failed(error);
      return;
    }
    showRefusal(error);
    return;
  }
  await load();
}

async function removeBudget(budget) {
  if (!window.confirm(t("budget_delete_confirm", { what: describe(budget) }))) return;
  clearErrors();
  try {
    await api(`/api/budgets/${encodeURIComponent(budget.id)}`, { method: "DELETE" });
    if (editing?.id === budget.id) resetForm();
    formStatus("notice", t("budget_deleted", { what: describe(budget) }));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {  // gone already: as good as deleted
      failed(error);
      return;
    }
  }
  await load();
}

for (const scope of config.scopes) field("scope").append(el("option", { value: scope, text: t(`scope_${scope}`) }));
for (const period of config.periods) {
  field("period").append(el("option", { value: period, text: t(`budget_period_${period}`) }));
}
field("scope").addEventListener("change", showSubjectHint);
form.addEventListener("submit", save);
document.getElementById("b-cancel").addEventListener("click", () => {
  clearErrors();
  resetForm();
});
document.querySelector(".currency")?.setAttribute("hidden", "");  // limits are in the pricing currency only
resetForm();
refreshEvery(10, load);
