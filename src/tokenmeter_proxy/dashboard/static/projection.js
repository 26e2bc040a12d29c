// The overview's month-end projection: the current UTC month's spend so far, plus the rate of
// the last 7 days times what is left of the month. Computed here from the stats' daily costs
// (asked for 90 days, so that every day of the month is a whole day), not by the API.
import { fmt, setText, t } from "./common.js";

const DAY = 86_400_000;

/**
 * `daily`: the stats' days, oldest first, the last one today (UTC); `now`: the moment to project
 * from. Returns {month (its first day), spent, rate (per day), projected}.
 */
export function monthProjection(daily, now = new Date()) {
  const today = daily[daily.length - 1]?.date ?? now.toISOString().slice(0, 10);
  const [year, month, day] = today.split("-").map(Number);
  const midnight = Date.UTC(year, month - 1, day);
  const spent = daily.filter((d) => d.date.startsWith(today.slice(0, 7))).reduce((sum, d) => sum + d.cost, 0);
  // the rate: the last 7 whole days and today so far, per day of that window
  const sinceMidnight = Math.min(1, Math.max(0, (now.getTime() - midnight) / DAY));
  const recent = daily.slice(-8).reduce((sum, d) => sum + d.cost, 0);
  const span = Math.min(7, daily.length - 1) + sinceMidnight;
  const rate = span > 0 ? recent / span : 0;
  const left = Math.max(0, (Date.UTC(year, month, 1) - now.getTime()) / DAY);
  return { month: new Date(Date.UTC(year, month - 1, 1)), spent, rate, projected: spent + rate * left };
}

/** The projection card, from stats of the last 90 days (in the currency they were asked in). */
export function showProjection(stats) {
  const { month, spent, rate, projected } = monthProjection(stats.daily);
  const money = (amount) => fmt.money(amount, stats.currency);
  setText("projected-title", t("projected_title_month", { month: fmt.month(month) }));
  setText("projected", money(projected));
  setText("projected-sub", t("projected_sub", { spent: money(spent), rate: money(rate) }));
  document.getElementById("projected").dataset.value = String(projected);
}
