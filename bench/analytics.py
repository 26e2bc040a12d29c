"""Analytics at scale: demo-data of 100,000 and 1,000,000 records over 90 days, on SQLite and
PostgreSQL, then cold stats (empty cache), filtered stats (by user, session, tag and provider),
stats grouped by a tag, the first sessions page, and the RSS growth of the proxy while it
streams the whole CSV export.

    .venv/bin/python bench/analytics.py                       # both sizes, both databases
    .venv/bin/python bench/analytics.py --sizes 100000 --databases sqlite
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from run import PROXY, ROOT, _drop_postgres, clean_environ, create_postgres, free_port, rss_mb, start, stop, wait_port

TOKEN = "bench"


def get(url: str) -> tuple[float, Any]:
    request = urllib.request.Request(url, headers={"authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        body = json.loads(response.read())
    return (time.perf_counter() - started) * 1000, body


def export_growth(base: str, pid: int) -> tuple[int, float, float]:
    """Rows exported, seconds, and the proxy's RSS growth in MB while it streamed them."""
    before = peak = rss_mb(pid)
    request = urllib.request.Request(f"{base}/api/usage/export?period=90d&format=csv",
                                     headers={"authorization": f"Bearer {TOKEN}"})
    rows, started = -1, time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as response:
        for rows, _ in enumerate(response):
            if rows % 50_000 == 0:
                peak = max(peak, rss_mb(pid))
    return rows, time.perf_counter() - started, round(max(peak, rss_mb(pid)) - before, 1)


def measure(database: str, size: int, workdir: Path, log: Any) -> dict[str, Any]:
    url = f"sqlite:///{workdir / f'analytics-{size}.db'}" if database == "sqlite" else create_postgres()
    environ = clean_environ()
    environ["TOKENMETER_PRICING"] = str(ROOT / "config" / "pricing.yaml")
    subprocess.run([PROXY, "migrate", "--database-url", url], check=True, stdout=log, stderr=log, env=environ)
    started = time.perf_counter()
    subprocess.run([PROXY, "demo-data", "--records", str(size), "--days", "90", "--database-url", url, "--seed", "5"],
                   check=True, stdout=log, stderr=log, env=environ)
    row: dict[str, Any] = {"database": database, "records": size, "demo_data_s": round(time.perf_counter() - started)}
    port = free_port()
    proxy = start([PROXY, "serve", "--port", str(port), "--database-url", url, "--admin-token", TOKEN], "0", log,
                  env=environ)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_port(port, proxy)
        _, page = get(f"{base}/api/usage/records?limit=1")  # connections warmed; the stats cache is still empty
        record = page["records"][0]
        row["stats_30d_cold_ms"], _ = get(f"{base}/api/usage/stats?period=30d")
        row["stats_30d_user_ms"], _ = get(f"{base}/api/usage/stats?period=30d&user_id={record['user_id']}")
        row["stats_30d_session_ms"], _ = get(f"{base}/api/usage/stats?period=30d&session_id={record['session_id']}")
        row["stats_30d_by_tag_ms"], _ = get(f"{base}/api/usage/stats?period=30d&by_tag=feature")
        row["stats_30d_tag_ms"], _ = get(f"{base}/api/usage/stats?period=30d&tag=team:search")
        row["stats_30d_provider_ms"], _ = get(f"{base}/api/usage/stats?period=30d&provider=anthropic")
        row["sessions_page_ms"], _ = get(f"{base}/api/usage/sessions?limit=50&offset=0")
        row["stats_90d_cold_ms"], _ = get(f"{base}/api/usage/stats?period=90d")
        rows, seconds, growth = export_growth(base, proxy.pid)
        row.update(export_rows=rows, export_s=round(seconds, 1), export_rss_growth_mb=growth)
    finally:
        stop(proxy)
        if database == "postgres":
            _drop_postgres(url)
    for key, value in row.items():
        if key.endswith("_ms"):
            row[key] = round(value, 1)
    print("  " + ", ".join(f"{key} {value}" for key, value in row.items()), file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--databases", default="sqlite,postgres")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tokenmeter-analytics-"))
    rows = []
    with open(workdir / "processes.log", "ab") as log:
        for database in args.databases.split(","):
            for size in (int(n) for n in args.sizes.split(",")):
                rows.append(measure(database, size, workdir, log))
    columns = ["database", "records", "demo_data_s", "stats_30d_cold_ms", "stats_30d_user_ms", "stats_30d_session_ms",
               "stats_30d_by_tag_ms", "stats_30d_tag_ms", "stats_30d_provider_ms", "sessions_page_ms",
               "stats_90d_cold_ms", "export_s", "export_rss_growth_mb"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[column]) for column in columns) + " |")


if __name__ == "__main__":
    main()
