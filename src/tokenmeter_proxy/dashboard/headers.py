"""The response headers of the dashboard's pages and of the widget, which differ in one thing
above all: the dashboard may never be framed, the widget is made to be."""

from __future__ import annotations

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'")
PAGE_HEADERS = {  # the dashboard: never cached, never framed
    "cache-control": "no-store", "vary": "Accept-Language, Cookie", "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin", "x-frame-options": "DENY",
    "content-security-policy": f"{_CSP}; frame-ancestors 'none'",
}
WIDGET_HEADERS = {  # the widget: framed by the chat app; its URL (the signature) never sent on
    "cache-control": "no-store", "vary": "Accept-Language", "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer", "content-security-policy": f"{_CSP}; frame-ancestors *",
}
