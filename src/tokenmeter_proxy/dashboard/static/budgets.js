// A budget as a bar per limit (cost, tokens) with a mark at its warning level; warnings and
// exceeded budgets are highlighted. Shared by the overview and the session page.
import { config, el, fmt, t } from "./common.js";

export function budgetView(budget) {
  const limits = [];
  const warnAt = budget.warn_at ?? 0.8;
  let state = "ok";
  for (const [max, spent, reserved, show] of [
    [budget.max_cost, budget.spent_cost, budget.reserved_cost, (n) => fmt.money(n, budget.currency)],
    [budget.max_tokens, budget.spent_tokens, budget.reserved_tokens, (n) => `${fmt.int(n)} ${t("tokens")}`]]) {
    if (max === null || max === undefined) continue;
    const ratio = max > 0 ? spent / max : 1;
    if (ratio >= 1) state = "over";
    else if ((spent + (reserved || 0)) / (max || 1) >= warnAt && state !== "over") state = "warn";
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.min(100, ratio * 100).toFixed(1)}%`;
    const mark = el("span", { class: "mark" });
    mark.style.left = `${Math.min(100, warnAt * 100)}%`;
    limits.push(el("div", { class: "meter", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                            "aria-valuenow": Math.round(ratio * 100),
                            "aria-label": t("budget_spent_of", { spent: show(spent), max: show(max) }) }, fill, mark));
    limits.push(el("p", { class: "budget-text", text: t("budget_line", {
      spent: show(spent), max: show(max), percent: fmt.percent(ratio), remaining: show(Math.max(0, max - spent)),
      reserved: show(reserved || 0) }) }));
  }
  const resets = budget.resets_at ? t("resets", { when: fmt.moment(budget.resets_at) }) : t("never_resets");
  return el("div", { class: `budget ${state}` },
    el("p", { class: "budget-head" }, el("strong", { text: t(`scope_${budget.scope}`) }), " ",
       el("code", { class: "ident", text: budget.subject }), ` · ${t(`per_${budget.period}`)} · ${resets}`,
       state === "ok" ? null : el("span", { class: `badge ${state}`, text: t(`budget_${state}`) })),
    ...limits);
}

export function defaultsView(defaults) {
  if (!defaults.length) return null;
  return el("p", { class: "hint", text: t("budget_defaults", { list: defaults.map((d) => [
    t(`scope_${d.scope}`), t(`per_${d.period}`),
    d.max_cost !== null ? fmt.money(d.max_cost, config.base_currency) : null,
    d.max_tokens !== null ? `${fmt.int(d.max_tokens)} ${t("tokens")}` : null].filter(Boolean).join(" ")).join("; ") }) });
}

