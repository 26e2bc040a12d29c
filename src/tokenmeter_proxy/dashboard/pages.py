"""The dashboard's HTML: page templates filled with the reader's language, and the choice of
that language from `Accept-Language`. No I/O after loading; the routes live in `routes.py`.

Templates are plain HTML with `{{name}}` slots: `{{t.key}}` is a string of the page's
language, any other name a value given to `render`; every slot is HTML-escaped except the
`RAW` ones, which the code builds itself (the page body, the JSON configuration block).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STRINGS = HERE / "i18n"
STATIC = HERE / "static"
LANGUAGES = ("en", "de")
RAW = frozenset({"body", "config", "scripts", "header", "current"})
_SLOT = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_IMPORT = re.compile(r'^import [^;]* from "\./([a-z]+\.js)";', re.MULTILINE)
_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8}){0,3}$")


def negotiate(accept_language: str | None) -> tuple[str, str]:
    """(language, locale) for an `Accept-Language` header: the most preferred tag whose language
    we have strings for (`de-AT` gives German strings, formatted as in Austria); English else."""
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        tag = tag.strip()
        if _TAG.match(tag) and quality > 0:
            choices.append((-quality, position, tag))
    for _, _, tag in sorted(choices):
        language = tag.split("-")[0].lower()
        if language in LANGUAGES:
            return language, tag
    return "en", "en"


def _closure(name: str, direct: Mapping[str, list[str]]) -> tuple[str, ...]:
    found: list[str] = []
    pending = list(direct.get(name, ()))
    while pending:
        module = pending.pop(0)
        if module not in found:
            found.append(module)
            pending.extend(direct.get(module, ()))
    return tuple(sorted(found))


def script_json(value: Any) -> str:
    """JSON safe inside a `<script type="application/json">` block (no `</script>` breakout)."""
    text = orjson.dumps(value).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True)
class Pages:
    """The templates and the strings of every language, loaded once."""

    templates: Mapping[str, str]
    strings: Mapping[str, Mapping[str, str]]
    imports: Mapping[str, tuple[str, ...]]  # script -> every module it imports, directly or not

    @classmethod
    def load(cls) -> Pages:
        templates = {path.stem: path.read_text(encoding="utf-8") for path in TEMPLATES.glob("*.html")}
        strings = {language: json.loads((STRINGS / f"{language}.json").read_text(encoding="utf-8"))
                   for language in LANGUAGES}
        direct = {path.name: _IMPORT.findall(path.read_text(encoding="utf-8")) for path in STATIC.glob("*.js")}
        return cls(templates=templates, strings=strings, imports={name: _closure(name, direct) for name in direct})

    def fill(self, template: str, language: str, values: Mapping[str, object]) -> str:
        """A template with its slots filled; an unknown slot is a bug and raises KeyError."""
        strings = self.strings[language]

        def slot(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("t."):
                return html.escape(strings[name[2:]])
            value = values[name]
            return str(value) if name in RAW else html.escape(str(value))

        return _SLOT.sub(slot, self.templates[template])

    def page(self, body: str, *, language: str, locale: str, title: str, script: str | None,
             config: Mapping[str, Any], body_class: str = "", values: Mapping[str, object] | None = None) -> str:
        """A whole page: the layout around the `body` template, with the configuration the
        page's script reads (its language, strings, and whatever `config` adds)."""
        filled = self.fill(body, language, values or {})
        # the modules the page's script imports, asked for at once rather than one level at a time
        preload = "".join(f'<link rel="modulepreload" href="/dashboard/static/{name}">\n'
                          for name in self.imports.get(f"{script}.js", ()))
        script_tag = preload + f'<script type="module" src="/dashboard/static/{script}.js"></script>' if script else ""
        return self.fill("layout", language, {
            "locale": locale, "title": title, "body": filled, "body_class": body_class, "scripts": script_tag,
            "config": script_json({"lang": language, "locale": locale, "strings": self.strings[language], **config}
                                  if script else {}),
        })
