"""The admin API's OpenAPI 3.1 description, served at `/api/openapi.json` (and fuzzed by the
tests with schemathesis, so it cannot drift from what the API does)."""

from __future__ import annotations

from typing import Any, get_args

from . import __version__
from .access import DEFAULT_LINK_SECONDS, MAX_LINK_SECONDS
from .alerts import EVENT_TYPES
from .budgets import PERIODS, SCOPES
from .types import UsageSource

_TEXT = {"type": "string", "maxLength": 1024}
_COUNT = {"type": "integer", "minimum": 0}
_MONEY = {"type": "number"}
_TIME = {"type": "string", "format": "date-time"}
_ERROR = {"description": "Bad input, or an unknown id", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}
_UNAUTHORIZED = {"description": "Missing or wrong admin token", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/Error"}}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _ok(schema: str, description: str = "OK", status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema}"}}}}, "400": _ERROR, "401": _UNAUTHORIZED}


def _object(properties: dict[str, Any], *, nullable: tuple[str, ...] = ()) -> dict[str, Any]:
    props = {name: ({"anyOf": [schema, {"type": "null"}]} if name in nullable else schema)
             for name, schema in properties.items()}
    return {"type": "object", "properties": props, "required": list(properties)}


def _optional(schema: dict[str, Any], **properties: Any) -> dict[str, Any]:
    """`schema` with more properties that an answer may leave out."""
    return {**schema, "properties": {**schema["properties"], **properties}}


_TOTALS = _object({"requests": _COUNT, "input_tokens": _COUNT, "cached_input_tokens": _COUNT,
                   "output_tokens": _COUNT, "total_tokens": _COUNT, "cost": _MONEY, "unpriced_requests": _COUNT,
                   "estimated_requests": _COUNT})
_BRIEF = {"requests": _COUNT, "input_tokens": _COUNT, "output_tokens": _COUNT, "cost": _MONEY}
_RECORD = _object({
    "id": {"type": "string"}, "created_at": _TIME, "session_id": {"type": "string"}, "user_id": {"type": "string"},
    "api_key_id": {"type": "string"}, "endpoint": {"type": "string"}, "model": {"type": "string"},
    "input_tokens": _COUNT, "cached_input_tokens": _COUNT, "output_tokens": _COUNT, "reasoning_tokens": _COUNT,
    "total_tokens": _COUNT, "cost": _MONEY, "currency": {"type": "string"}, "price_version": {"type": "string"},
    "usage_source": {"enum": list(get_args(UsageSource))}, "status_code": {"type": "integer"},
    "streamed": {"type": "boolean"}, "latency_ms": _COUNT,
    "price_source": {"enum": ["pricing_file", "upstream", "catalog"]}, "provider": {"type": "string"},
    "route": {"type": "string"}, "tags": {"type": "object", "additionalProperties": {"type": "string"}},
}, nullable=("session_id", "user_id", "api_key_id", "model", "cost", "status_code", "price_source", "route"))
_BUDGET_IN = {
    "type": "object", "required": ["scope", "period"],
    "properties": {
        "scope": {"enum": list(SCOPES)}, "subject": {"type": "string"},
        "period": {"enum": list(PERIODS)}, "max_cost": {"type": "number", "minimum": 0},
        "max_tokens": {"type": "integer", "minimum": 0}, "warn_at": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
_BUDGET = _object({
    "id": {"type": "integer"}, "scope": {"type": "string"}, "subject": {"type": "string"},
    "period": {"type": "string"}, "max_cost": _MONEY, "max_tokens": _COUNT, "warn_at": _MONEY,
    "currency": {"type": "string"}, "spent_cost": _MONEY, "spent_tokens": _COUNT, "reserved_cost": _MONEY,
    "reserved_tokens": _COUNT, "remaining_cost": _MONEY, "remaining_tokens": {"type": "integer"},
    "resets_at": _TIME, "forecast_exhausted_at": _TIME,
}, nullable=("max_cost", "max_tokens", "remaining_cost", "remaining_tokens", "resets_at", "forecast_exhausted_at"))
_DELIVERY = _object({
    "id": {"type": "string", "description": "The event's webhook-id, the same on every URL and every attempt"},
    "type": {"enum": list(EVENT_TYPES)}, "url": {"type": "string"},
    "status": {"enum": ["pending", "delivered", "failed"]}, "attempts": _COUNT,
    "last_status_code": {"type": "integer"}, "created_at": _TIME, "delivered_at": _TIME,
}, nullable=("last_status_code", "delivered_at"))
_FIGURES = _object({"requests": _COUNT, "input_tokens": _COUNT, "cached_input_tokens": _COUNT,
                    "output_tokens": _COUNT})
_DIFFERENCE = _object({"requests": {"type": "integer"}, "input_tokens": {"type": "integer"},
                       "cached_input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}})
_DATE = {"type": "string", "format": "date"}
_SIDES = {"metered": _FIGURES, "provider": _FIGURES, "difference": _DIFFERENCE}
_PROVIDER_FAILED = {"description": "The provider's usage API refused the key, could not be reached, or kept "
                                   "failing (504: it did not answer in time)", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"}}}}
_PERIOD = {"enum": ["24h", "7d", "30d", "90d"], "default": "7d"}
_FILTERS = [
    _query("session_id", _TEXT, "Only this session"), _query("user_id", _TEXT, "Only this user"),
    _query("model", _TEXT, "Only this model, as recorded"),
    _query("provider", _TEXT, "Only this provider (openai, anthropic, google...: a route's provider)"),
    _query("tag", _TEXT, "Only requests with this tag, as name:value (team:search)"),
]


def admin_openapi() -> dict[str, Any]:
    """The OpenAPI document of `/api/*`."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "tokenmeter-proxy admin API", "version": __version__,
                 "description": "Usage, cost and budgets of the LLM calls the proxy metered."},
        "security": [{"adminToken": []}],
        "paths": {
            "/api/usage/stats": {"get": {
                "summary": "Totals, daily figures, per-model and per-provider figures for a period",
                "parameters": [_query("period", _PERIOD, "Window ending now"), *_FILTERS,
                               _query("by_tag", _TEXT, "Add by_tag: the figures per value of this tag"),
                               _query("currency", {"type": "string", "maxLength": 8},
                                      "Report in this currency (the pricing file's exchange rates)")],
                "responses": _ok("Stats")}},
            "/api/usage/sessions": {"get": {
                "summary": "Sessions, most recently active first",
                "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}, ""),
                               _query("offset", {"type": "integer", "minimum": 0, "default": 0}, ""),
                               _query("q", _TEXT, "Only sessions whose id starts with this, or that this user "
                                                  "used")],
                "responses": _ok("Sessions")}},
            "/api/usage/top": {"get": {
                "summary": "The sessions, users or models that cost most in a period",
                "parameters": [_query("period", _PERIOD, "Window ending now"),
                               _query("by", {"enum": ["session", "user", "model"], "default": "session"}, ""),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, ""),
                               _query("currency", {"type": "string", "maxLength": 8}, "Report in this currency"),
                               _query("provider", _TEXT, "Only this provider")],
                "responses": _ok("Top")}},
            "/api/usage/sessions/{session_id}": {"get": {
                "summary": "One session's totals and records, newest first",
                "parameters": [{"name": "session_id", "in": "path", "required": True, "schema": _TEXT},
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "")],
                "responses": {**_ok("Session"), "404": _ERROR}}},
            "/api/usage/records": {"get": {
                "summary": "Records newest first, a page at a time",
                "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, ""),
                               _query("cursor", _TEXT, "next_cursor of the previous page"), *_FILTERS,
                               _query("since", _TIME, "From (ISO 8601)"), _query("until", _TIME, "Before")],
                "responses": _ok("Records")}},
            "/api/usage/sync-openai": {"post": {
                "summary": "Read OpenAI's usage API for UTC days (admin key in OPENAI_ADMIN_KEY) and replace "
                           "the provider figures stored for them",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["start_date", "end_date"],
                    "properties": {"start_date": _DATE, "end_date": _DATE, "api_base": {
                        "anyOf": [{"type": "string"}, {"type": "null"}],
                        "description": "The configured TOKENMETER_OPENAI_API_BASE, or a URL on this machine"}}}}}},
                "responses": {**_ok("Sync"), "502": _PROVIDER_FAILED, "504": _PROVIDER_FAILED}}},
            "/api/usage/reconciliation": {"get": {
                "summary": "Provider figures against metered ones (all but demo records), per UTC day and model",
                "parameters": [{**_query("start_date", _DATE, "First UTC day"), "required": True},
                               {**_query("end_date", _DATE, "Last UTC day, included (at most 366 days)"),
                                "required": True}],
                "responses": _ok("Reconciliation")}},
            "/api/widget-links": {"post": {
                "summary": "A signed link to the sidebar widget of a session (/widget/session/{id}) or of a user "
                           "(/widget/user/{id}) that works without the admin token until it expires",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object",
                    "properties": {"session_id": {"type": "string", "minLength": 1, "maxLength": 256,
                                                  "description": "A link to this session (and its user's sessions)"},
                                   "user_id": {"type": "string", "minLength": 1, "maxLength": 256,
                                               "description": "A link to this user's usage, as the app sends the "
                                                              "id (hashed as records are, if configured)"},
                                   "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_LINK_SECONDS,
                                                   "default": DEFAULT_LINK_SECONDS}},
                    "oneOf": [{"required": ["session_id"], "not": {"required": ["user_id"]}},
                              {"required": ["user_id"], "not": {"required": ["session_id"]}}]}}}},
                "responses": _ok("WidgetLink")}},
            "/api/budgets": {
                "get": {"summary": "Budgets and where each stands", "responses": _ok("Budgets")},
                "put": {"summary": "Create (201) or replace (200) the budget of a scope, subject and period",
                        "requestBody": {"required": True,
                                        "content": {"application/json": {"schema": _BUDGET_IN}}},
                        "responses": {**_ok("Budget", "Replaced"), "201": {
                            "description": "Created", "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Budget"}}}}}},
            },
            "/api/webhooks/deliveries": {"get": {
                "summary": "Alert webhook deliveries, newest first: one per event and URL, with its outcome",
                "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}, "")],
                "responses": _ok("Deliveries")}},
            "/api/budgets/{budget_id}": {"delete": {
                "summary": "Remove a budget",
                "parameters": [{"name": "budget_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"204": {"description": "Removed"}, "404": _ERROR, "401": _UNAUTHORIZED}}},
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _object({"error": {"type": "object", "required": ["message", "type"], "properties": {
                    "message": {"type": "string"}, "type": {"type": "string"}, "code": {}, "param": {}}}}),
                "Totals": _TOTALS,
                "Stats": _optional(_object({
                    "period": {"type": "string"}, "currency": {"type": "string"}, "totals": _TOTALS,
                    "daily": {"type": "array", "items": _object({"date": {"type": "string"}, **_BRIEF})},
                    "by_model": {"type": "array", "items": _object({"model": {"type": "string"}, **_BRIEF},
                                                                    nullable=("model",))},
                    "by_provider": {"type": "array", "items": _object({"provider": {"type": "string"}, **_BRIEF})}}),
                    by_tag={"type": "array", "items": _object({"value": {"type": "string"}, **_BRIEF},
                                                              nullable=("value",))}),
                "Top": _object({"period": {"type": "string"}, "currency": {"type": "string"},
                                "by": {"enum": ["session", "user", "model"]},
                                "top": {"type": "array", "items": _object({"id": {"type": "string"}, **_BRIEF,
                                                                           "unpriced_requests": _COUNT})}}),
                "WidgetLink": _object({"url": {"type": "string"}, "path": {"type": "string"},
                                       "expires_at": _TIME}),
                "Sessions": _object({"total": _COUNT, "sessions": {"type": "array", "items": _object({
                    "session_id": {"type": "string"}, "first_seen": _TIME, "last_seen": _TIME, **_BRIEF,
                    "providers": {"type": "array", "items": _object({
                        "provider": {"type": "string"}, "requests": _COUNT, "cost": _MONEY})}})}}),
                "Session": _object({"session_id": {"type": "string"}, "totals": _TOTALS,
                                    "records": {"type": "array", "items": _RECORD}}),
                "Records": _object({"records": {"type": "array", "items": _RECORD},
                                    "next_cursor": {"type": "string"}}, nullable=("next_cursor",)),
                "Budget": _BUDGET,
                "Sync": _object({"provider": {"type": "string"}, "api_base": {"type": "string"},
                                 "start_date": _DATE, "end_date": _DATE, "days": _COUNT, "rows": _COUNT,
                                 "totals": _FIGURES}),
                "Reconciliation": _object({
                    "days": {"type": "array", "items": _object({"date": _DATE, "model": {"type": "string"}, **_SIDES},
                                                              nullable=("model", "provider", "difference"))},
                    "totals": _object(_SIDES, nullable=("provider", "difference"))}),
                "Deliveries": _object({"deliveries": {"type": "array", "items": _DELIVERY}}),
                "Budgets": _object({"budgets": {"type": "array", "items": _BUDGET},
                                    "defaults": {"type": "array", "items": {"type": "object"}}}),
            },
        },
    }
