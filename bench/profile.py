"""Profile the proxy under load with py-spy and print where its CPU goes per request, by layer
(uvicorn, our middleware, the upstream client, metering, storage...) and by function.

    .venv/bin/python bench/profile.py --scenario nonstream --seconds 15
    .venv/bin/python bench/profile.py --target tokenmeter_pg_budget --concurrency 1
    .venv/bin/python bench/profile.py --scenario astream        # Anthropic streams through the route
    .venv/bin/python bench/profile.py --target tokenmeter_before --before /tmp/tm-before   # an earlier checkout

Runs the fake upstream and a proxy target like bench/run.py, samples the thread holding the GIL
at 250 Hz (py-spy --gil: idle waits are not samples) while wrk or the stream load runs, and
spreads the process's measured CPU per request over the samples. Work done without the GIL
(system calls, SQLite's C code) is spread in proportion, so read the microseconds as a guide.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from run import HERE, PYTHON, Target, free_port, start, stop, streamload, wait_port, wrk

LAYERS = [  # first match wins, checked against each frame from the leaf up
    ("tiktoken (token counting)", ("tiktoken",)),
    ("orjson / SSE / usage reading", ("tokenmeter_proxy/sse.py", "tokenmeter_proxy/usage.py",
                                      "tokenmeter_proxy/request_body.py", "tokenmeter_proxy/providers/",
                                      "tokenmeter_proxy/openai_usage.py", "tokenmeter_proxy/identity.py")),
    ("metering + pricing + metrics", ("tokenmeter_proxy/metering.py", "tokenmeter_proxy/pricing.py",
                                      "tokenmeter_proxy/metrics.py", "prometheus_client", "decimal")),
    ("budgets", ("tokenmeter_proxy/budget", "tokenmeter_proxy/leases.py")),
    ("telemetry", ("tokenmeter_proxy/telemetry.py", "tokenmeter_proxy/otlp.py", "tokenmeter_proxy/histograms.py",
                   "tokenmeter_proxy/tracecontext.py", "opentelemetry")),
    ("storage (writer thread, SQL)", ("tokenmeter_proxy/storage", "sqlalchemy", "sqlite3")),
    ("upstream client", ("tokenmeter_proxy/http1.py", "tokenmeter_proxy/upstream.py", "aiohttp", "httpx",
                         "httpcore")),
    ("middleware + forwarder", ("tokenmeter_proxy/middleware.py", "tokenmeter_proxy/proxy.py",
                                "tokenmeter_proxy/app.py", "tokenmeter_proxy/routes.py")),
    ("uvicorn + httptools", ("uvicorn", "httptools")),
    ("event loop (uvloop/asyncio)", ("uvloop", "asyncio")),
]


def summarise(raw: Path, cpu_per_request: float) -> str:
    """Collapsed stacks (py-spy --format raw) to two tables: by layer and by leaf function, each
    with its share of the samples and of the CPU per request (µs)."""
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] += count
        layers[_layer(frames)] += count
    lines = ["| layer | share of samples | µs per request |", "|---|---|---|"]
    lines += [f"| {name} | {count / total:.1%} | {cpu_per_request * count / total:.0f} |"
              for name, count in layers.most_common()]
    lines += ["", "| leaf function (self time) | share | µs per request |", "|---|---|---|"]
    lines += [f"| `{name}` | {count / total:.1%} | {cpu_per_request * count / total:.0f} |"
              for name, count in leaves.most_common(25)]
    return "\n".join(lines)


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return "other (idle, interpreter)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["nonstream", "stream", "astream"], default="nonstream")
    targets = ["tokenmeter", "tokenmeter_pg", "tokenmeter_budget", "tokenmeter_pg_budget", "tokenmeter_otel"]
    parser.add_argument("--target", default="tokenmeter", choices=targets + [t + "_before" for t in targets])
    parser.add_argument("--before", help="the checkout serving a *_before target (as in bench/run.py)")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    args.workers, args.proxy_cores = 1, "0"
    workdir = Path(tempfile.mkdtemp(prefix="tokenmeter-profile-"))
    log = open(workdir / "processes.log", "ab")  # noqa: SIM115 (closed below)
    upstream_port = free_port()
    upstream = start([PYTHON, str(HERE / "upstream.py"), "--port", str(upstream_port)], "1", log)
    raw = workdir / "profile.txt"
    try:
        wait_port(upstream_port, upstream)
        with Target(args.target, args, f"http://127.0.0.1:{upstream_port}/v1", workdir, log) as target:
            assert target.process is not None
            url = f"{target.url}/v1/chat/completions"
            wrk(url, args.concurrency, 2, "1")
            spy = subprocess.Popen([str(Path(PYTHON).with_name("py-spy")), "record", "-p", str(target.process.pid),
                                    "-r", "250", "-d", str(args.seconds), "-f", "raw", "-o", str(raw), "--threads",
                                    "--gil", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            before = target.cpu()
            if args.scenario == "nonstream":
                done = wrk(url, args.concurrency, args.seconds, "1")["requests"]
            elif args.scenario == "stream":
                done = streamload(url, 256, args.seconds, "1")["streams"]
            else:
                assert target.messages_path, "astream needs a target with the anthropic route"
                done = streamload(target.url + target.messages_path, 256, args.seconds, "1", "anthropic")["streams"]
            cpu_per_request = (target.cpu() - before) / max(done, 1) * 1e6
            spy.wait(args.seconds + 30)
    finally:
        stop(upstream)
        log.close()
    unit = {"nonstream": "request", "stream": "stream of 20 chunks", "astream": "stream of 22 events"}[args.scenario]
    print(f"## Profile: {args.target}, {args.scenario}" + (f" c={args.concurrency}" if args.scenario == "nonstream"
          else " x256") + f", {args.seconds} s, py-spy --gil at 250 Hz\n")
    print(f"CPU of the proxy process: {cpu_per_request:.0f} µs per {unit}.\n")
    print(summarise(raw, cpu_per_request))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
