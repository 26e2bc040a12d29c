"""Synthetic usage for demos and benchmarks: sessions of a few to a few dozen requests by users
who come back, a working-hours daily rhythm with quiet weekends, today's popular models of
OpenAI, Anthropic and Google (each through its own route), streaming and not, tagged by feature
and team (most of them), a few upstream errors. Every record says `usage_source: "demo"`."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .types import Pricer, Usage, UsageRecord

# (model, endpoint, provider, route, share of requests)
MODELS = (
    ("gpt-4o-mini", "chat/completions", "openai", "openai", 0.30),
    ("gpt-4o", "chat/completions", "openai", "openai", 0.16),
    ("gpt-4.1-mini", "chat/completions", "openai", "openai", 0.11),
    ("o4-mini", "chat/completions", "openai", "openai", 0.05),
    ("gpt-4.1", "chat/completions", "openai", "openai", 0.03),
    ("gpt-4o-mini", "responses", "openai", "openai", 0.05),
    ("text-embedding-3-small", "embeddings", "openai", "openai", 0.10),
    ("claude-sonnet-4-5-20250929", "messages", "anthropic", "anthropic", 0.08),
    ("claude-haiku-4-5-20251001", "messages", "anthropic", "anthropic", 0.04),
    ("gemini-2.5-flash", "generate_content", "google", "gemini", 0.08),
)
_WEIGHTS = [share for *_, share in MODELS]
FEATURES = ("chat", "summarize", "translate", "search", "code-review")
TEAMS = ("search", "support", "growth", "platform")
# relative traffic per UTC hour: quiet nights, busy working hours
HOURS = (1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 11, 11, 9, 10, 11, 11, 10, 8, 6, 5, 4, 3, 2, 1)



@dataclass(frozen=True, slots=True)
class _Session:
    id: str
    user: str
    key: str
    start: dt.datetime
    model: int
    tags: dict[str, str]


def demo_records(count: int, days: int, *, now: dt.datetime, seed: int, pricer: Pricer,
                 price_version: str, currency: str) -> Iterator[UsageRecord]:
    """`count` records spread over the last `days` days, reproducible for a seed."""
    random_ = random.Random(seed)
    sessions = _sessions(random_, count, days, now, seed)
    for _ in range(count):
        session = sessions[int(len(sessions) * random_.random() ** 1.3)]  # some sessions are long
        model, endpoint, provider, route, _ = MODELS[session.model if random_.random() < 0.8 else
                                                     random_.choices(range(len(MODELS)), _WEIGHTS)[0]]
        created = min(session.start + dt.timedelta(seconds=random_.expovariate(1 / 600)), now)
        usage, status = _usage(random_, model, endpoint)
        cost, source = pricer(model, usage, provider)
        yield UsageRecord(
            id=f"{int(created.timestamp() * 1000):012x}{random_.getrandbits(48):012x}", created_at=created,
            session_id=session.id, user_id=session.user, api_key_id=session.key, endpoint=endpoint, model=model,
            usage=usage, cost=cost, currency=currency, price_version=price_version, usage_source="demo",
            status_code=status, streamed=endpoint != "embeddings" and random_.random() < 0.65,
            latency_ms=int(random_.lognormvariate(6.5, 0.8)), price_source=source, provider=provider, route=route,
            tags=session.tags,
        )


def _sessions(random_: random.Random, count: int, days: int, now: dt.datetime, seed: int) -> list[_Session]:
    users = [f"user-{seed}-{n:05d}" for n in range(max(count // 200, 5))]
    keys = [f"{random_.getrandbits(64):016x}" for _ in range(max(len(users) // 20, 2))]
    day_weights = [0.35 if (now - dt.timedelta(days=d)).weekday() >= 5 else 1.0 for d in range(days)]
    sessions = []
    for n in range(max(count // 12, 1)):
        day = random_.choices(range(days), day_weights)[0]
        hour = random_.choices(range(24), HOURS)[0]
        start = (now - dt.timedelta(days=day)).replace(hour=hour, minute=random_.randrange(60), second=0,
                                                       microsecond=0)
        if start > now:
            start -= dt.timedelta(days=1)
        heavy = int(len(users) * random_.random() ** 2)  # a few heavy users
        tags = {"feature": random_.choices(FEATURES, (5, 3, 2, 2, 1))[0], "team": TEAMS[heavy % len(TEAMS)]}
        sessions.append(_Session(id=f"demo-{seed}-{n:07d}", user=users[heavy], key=keys[heavy % len(keys)],
                                 start=start, model=random_.choices(range(len(MODELS)), _WEIGHTS)[0],
                                 tags=tags if random_.random() < 0.85 else {}))
    return sessions


def _usage(random_: random.Random, model: str, endpoint: str) -> tuple[Usage, int]:
    if random_.random() < 0.015:
        return Usage(), random_.choice((400, 429, 500, 503))
    if endpoint == "embeddings":
        return Usage(input_tokens=int(random_.lognormvariate(5.5, 1.0)) + 1), 200
    input_tokens = int(random_.lognormvariate(6.6, 1.0)) + 10
    cached = int(input_tokens * random_.random()) // 128 * 128 if input_tokens > 1024 else 0
    output_tokens = int(random_.lognormvariate(5.3, 0.9)) + 1
    reasoning = int(output_tokens * 0.6) if model.startswith("o") else 0
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens + reasoning, cached_input_tokens=cached,
                 reasoning_tokens=reasoning), 200
