// A cost breakdown panel of the overview (by model, by provider, by tag): horizontal bars in the
// API's order (biggest cost first) and a table with each row's share of the total.
import { barChart } from "./charts.js";
import { emptyNote, fmt, replace, t, table } from "./common.js";

/**
 * ids: {chart, table}; rows: the API's rows ({requests, input_tokens, output_tokens, cost});
 * `name(row)` labels a row, `barText(row)` / `costText(row)` may replace its cost as the bar and
 * the table show it, `cell(row)` may make its first cell (a button, say) instead of its name.
 */
export function showBreakdown(ids, rows, stats, { heading, label, name, barText, costText, cell }) {
  const chart = document.getElementById(ids.chart);
  if (!rows.length) {
    chart.replaceChildren(emptyNote(t("no_data_period")));
    replace(ids.table);
    return;
  }
  const money = (row) => fmt.money(row.cost, stats.currency);
  const total = stats.totals.cost || 0;
  barChart(chart, rows.map((row) => ({
    label: name(row), value: row.cost, text: barText?.(row) ?? money(row),
    title: `${name(row)}: ${money(row)}, ${fmt.int(row.requests)} ${t("requests")}` })),
  { ariaLabel: heading });
  replace(ids.table, table(
    [{ label }, { label: t("requests"), numeric: true }, { label: t("input_tokens"), numeric: true },
     { label: t("output_tokens"), numeric: true }, { label: t("cost"), numeric: true },
     { label: t("share"), numeric: true }],
    rows.map((row) => [cell?.(row) ?? name(row), fmt.int(row.requests), fmt.int(row.input_tokens),
                       fmt.int(row.output_tokens), costText?.(row) ?? money(row),
                       total > 0 ? fmt.percent(row.cost / total) : "–"])));
}
