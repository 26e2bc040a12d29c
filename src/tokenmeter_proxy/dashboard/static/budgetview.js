// A budget as the API lists it, shown: its limits (cost, tokens) with where each stands, its
// state (ok, warning, exceeded) and when it runs out at the recent rate. The overview and the
// session page show a card per budget (`budgetView`); the budgets page puts the same parts in a
// table row (`limitsOf`, `spendMeter`, `budgetState`).
import { config, el, fmt, t } from "./common.js";

/** The budget's limits: [{kind, max, spent, reserved, show}] for the cost and the token limit it has. */
export function limitsOf(budget) {
  const limits = [
    { kind: "cost", max: budget.max_cost, spent: budget.spent_cost, reserved: budget.reserved_cost,
      show: (n) => fmt.money(n, budget.currency ?? config.base_currency) },
    { kind: "tokens", max: budget.max_tokens, spent: budget.spent_tokens, reserved: budget.reserved_tokens,
      show: (n) => `${fmt.int(n)} ${t("tokens")}` }];
  return limits.filter((limit) => limit.max !== null && limit.max !== undefined)
    .map((limit) => ({ ...limit, reserved: limit.reserved || 0 }));
}

/** "over" once a limit is spent, "warn" once spent and reserved reach `warn_at` of one, else "ok". */
export function budgetState(budget) {
  const warnAt = budget.warn_at ?? 0.8;
  let state = "ok";
  for (const limit of limitsOf(budget)) {
    if (limit.max <= 0 || limit.spent >= limit.max) return "over";
    if ((limit.spent + limit.reserved) / limit.max >= warnAt) state = "warn";
  }
  return state;
}

/**
 * The spend of one limit as a bar: role progressbar, its value over its maximum the spend over
 * the limit (as far as the limit: a bar cannot run past its end), with a mark at the warning level.
 */
export function spendMeter(limit, warnAt) {
  const ratio = limit.max > 0 ? limit.spent / limit.max : 1;
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.min(100, ratio * 100).toFixed(1)}%`;
  const mark = el("span", { class: "mark" });
  mark.style.left = `${Math.min(100, (warnAt ?? 0.8) * 100)}%`;
  return el("div", {
    class: "meter", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": limit.max,
    "aria-valuenow": Math.min(limit.spent, limit.max),
    "aria-valuetext": t("budget_spent_of", { spent: limit.show(limit.spent), max: limit.show(limit.max) }),
    "aria-label": t("budget_spent_of", { spent: limit.show(limit.spent), max: limit.show(limit.max) }) }, fill, mark);
}

/** When the budget runs out at the rate of the last 7 days, as words (null: no forecast to give). */
export function forecastText(budget) {
  return budget.forecast_exhausted_at ? t("runs_out", { when: fmt.moment(budget.forecast_exhausted_at) }) : null;
}

export function budgetView(budget) {
  const state = budgetState(budget);
  const lines = limitsOf(budget).flatMap((limit) => {
    const ratio = limit.max > 0 ? limit.spent / limit.max : 1;
    return [spendMeter(limit, budget.warn_at), el("p", { class: "budget-text", text: t("budget_line", {
      spent: limit.show(limit.spent), max: limit.show(limit.max), percent: fmt.percent(ratio),
      remaining: limit.show(Math.max(0, limit.max - limit.spent)), reserved: limit.show(limit.reserved) }) })];
  });
  const resets = budget.resets_at ? t("resets", { when: fmt.moment(budget.resets_at) }) : t("never_resets");
  const forecast = forecastText(budget);
  return el("div", { class: `budget ${state}` },
    el("p", { class: "budget-head" }, el("strong", { text: t(`scope_${budget.scope}`) }), " ",
       el("code", { class: "ident", text: budget.subject }),
       ` · ${t(`per_${budget.period}`)} · ${resets}${forecast ? ` · ${forecast}` : ""}`,
       state === "ok" ? null : el("span", { class: `badge ${state}`, text: t(`budget_${state}`) })),
    ...lines);
}

export function defaultsView(defaults) {
  if (!defaults.length) return null;
  return el("p", { class: "hint", text: t("budget_defaults", { list: defaults.map((d) => [
    t(`scope_${d.scope}`), t(`per_${d.period}`),
    d.max_cost !== null ? fmt.money(d.max_cost, config.base_currency) : null,
    d.max_tokens !== null ? `${fmt.int(d.max_tokens)} ${t("tokens")}` : null].filter(Boolean).join(" ")).join("; ") }) });
}
