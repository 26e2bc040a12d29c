// Tags on the overview: the filter (`tag=name:value`, beside the provider filter) and the cost
// by tag breakdown (`by_tag=name`, for a tag name chosen among those seen on recent requests).
// Both are remembered in this browser. A filter the API refuses is not applied: its message
// shows beside the input.
import { showBreakdown } from "./breakdown.js";
import { api, ApiError, el, emptyNote, replace, setText, t } from "./common.js";

const NAME = /^[a-z0-9_.-]{1,64}$/;  // as the API names tags
const SAMPLE = 1000;  // the newest records whose tag names the breakdown offers

export const tags = {
  filter: localStorage.getItem("tm-tag") ?? "",  // "name:value", or "" for every request
  name: localStorage.getItem("tm-tag-name") ?? "",  // the breakdown's tag name
  seen: [],  // tag names on the newest records
};

/** The query parameters the tags add to a stats request: its filter, and the breakdown's name. */
export function tagParams({ breakdown = false } = {}) {
  const params = new URLSearchParams();
  if (tags.filter) params.set("tag", tags.filter);
  if (breakdown && tags.name) params.set("by_tag", tags.name);
  return params;
}

/** Tag names on the newest records (no API lists every name; these are the ones in use). */
export async function loadTagNames() {
  const page = await api(`/api/usage/records?limit=${SAMPLE}`);
  tags.seen = [...new Set(page.records.flatMap((record) => Object.keys(record.tags ?? {})))].sort();
  if (!tags.name || !NAME.test(tags.name)) tags.name = tags.seen[0] ?? "";
  showNameOptions();
}

function showNameOptions() {
  const select = document.getElementById("by-tag");
  const names = [...new Set([...tags.seen, ...(tags.name ? [tags.name] : [])])].sort();
  const listed = [...select.options].map((option) => option.value);
  if (names.join("\n") !== listed.join("\n")) {  // rebuilt only when it changes: an open list stays open
    select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
  }
  select.value = tags.name;
  select.disabled = names.length === 0;
}

/** The breakdown panel, from stats asked for with `by_tag` (null: no tag name to break down by). */
export function showTagBreakdown(stats, onFilter) {
  if (!stats) {
    replace("tag-chart", emptyNote(t("no_tags")));
    replace("tag-table");
    return;
  }
  const name = (row) => (row.value === null ? t("untagged") : row.value);
  showBreakdown({ chart: "tag-chart", table: "tag-table" }, stats.by_tag, stats, {
    heading: t("cost_by_tag"), label: tags.name, name,
    cell: (row) => {  // a value narrows the overview to it
      if (row.value === null) return name(row);
      const button = el("button", { type: "button", class: "link", text: row.value,
                                    title: t("tag_filter_to", { tag: `${tags.name}:${row.value}` }) });
      button.addEventListener("click", () => onFilter(`${tags.name}:${row.value}`));
      return button;
    } });
  const suggestions = stats.by_tag.filter((row) => row.value !== null).map((row) => `${tags.name}:${row.value}`);
  document.getElementById("tag-suggestions").replaceChildren(
    ...suggestions.map((value) => el("option", { value })));
}

/** Say, above the figures, which tag they are narrowed to (nothing when they are not). */
export function showTagNote() {
  document.getElementById("tag-note").hidden = tags.filter === "";
  document.querySelector(".tag-filter").classList.toggle("active", tags.filter !== "");
  setText("tag-note-text", t("tag_filtered", { tag: tags.filter }));
  document.getElementById("tag").value = tags.filter;
}

function rememberFilter(value) {
  tags.filter = value;
  if (value) localStorage.setItem("tm-tag", value);
  else localStorage.removeItem("tm-tag");
  showTagNote();
}

/** Wire the filter and the name select; `onChange()` loads the figures again. */
export function tagControls(onChange) {
  const input = document.getElementById("tag");
  const error = document.getElementById("tag-error");
  const apply = async (value) => {
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    if (value) {
      try {  // the API judges the filter first; refused, it is not applied
        await api(`/api/usage/stats?period=24h&tag=${encodeURIComponent(value)}`);
      } catch (problem) {
        if (!(problem instanceof ApiError) || problem.status !== 400) throw problem;
        error.textContent = problem.message;
        error.hidden = false;
        input.setAttribute("aria-invalid", "true");
        return;
      }
    }
    rememberFilter(value);
    onChange();
  };
  document.getElementById("tag-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    apply(input.value.trim());
  });
  document.getElementById("tag-clear").addEventListener("click", () => apply(""));
  document.getElementById("by-tag").addEventListener("change", (event) => {
    tags.name = event.target.value;
    localStorage.setItem("tm-tag-name", tags.name);
    onChange();
  });
  showNameOptions();
  showTagNote();
  return apply;
}
