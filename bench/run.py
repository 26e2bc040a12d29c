"""Benchmark tokenmeter-proxy against calling the upstream directly and against naive
pass-through proxies, in one run, and print ratios (absolute figures drift on shared machines;
ratios taken in one run do not).

    make bench                                   # everything below, ~8 minutes
    .venv/bin/python bench/run.py --only direct,tokenmeter --scenarios nonstream --duration 5

Targets: direct, naive_httpx, naive_aiohttp (bench/baselines.py), tokenmeter (SQLite),
tokenmeter_pg (PostgreSQL), and tokenmeter_budget / tokenmeter_pg_budget, where a default
budget applies to every request (each is estimated with tiktoken and admitted against it);
tokenmeter_otel exports OpenTelemetry spans and metrics (OTLP/HTTP to the fake upstream);
tokenmeter_pg_x2 is two proxies sharing one PostgreSQL behind nginx (deploy/nginx.conf). With
--before DIR (a checkout of an earlier commit with its own .venv), a target named NAME_before is
NAME served by that checkout, side by side with this one in the same run.
Each proxy runs pinned to --proxy-cores; the fake upstream and the load generators share the
other cores. CPU per request is the utime+stime of the proxy's whole process tree (threads and
workers included) over the measurement, divided by completed requests.
Scenarios: nonstream (wrk at each --concurrency), stream (bench/streamload.py at each --streams),
astream (Anthropic message streams with as many events: /anthropic/v1/messages on tokenmeter,
through a routes file whose `anthropic` route is the fake upstream; /v1/messages elsewhere),
bigprompt (small requests beside 100,000-token prompts), memory (RSS over --memory-requests),
mixed (20,000 requests, streamed and not, 5% upstream errors: proxy errors, records lost, RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
PROXY = str(Path(sys.executable).with_name("tokenmeter-proxy"))
TICK = os.sysconf("SC_CLK_TCK")
POSTGRES = os.environ.get("TOKENMETER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def pinned(cores: str) -> list[str]:
    return ["taskset", "-c", cores] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []


def start(command: list[str], cores: str, log: Any, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(pinned(cores) + command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def process_tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                pass
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sorted(tree)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants."""
    total = 0.0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, ValueError):
            pass
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pass
    return round(total / 1024, 1)


def milliseconds(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    value = float(match.group(1))
    return {"us": value / 1000, "ms": value, "s": value * 1000}[match.group(2)]


def wrk(url: str, connections: int, duration: float, cores: str) -> dict[str, Any]:
    command = [*pinned(cores), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
               str(HERE / "post.lua"), url]
    out = subprocess.run(command, capture_output=True, text=True).stdout

    def found(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, out)

    result = {"rps": float(found(r"Requests/sec:\s+([\d.]+)").group(1)),  # type: ignore[union-attr]
              "requests": int(found(r"(\d+) requests in").group(1)),  # type: ignore[union-attr]
              "p50_ms": milliseconds(found(r"50%\s+([\d.]+\w+)").group(1)),  # type: ignore[union-attr]
              "p99_ms": milliseconds(found(r"99%\s+([\d.]+\w+)").group(1)),  # type: ignore[union-attr]
              "errors": 0}
    if non_2xx := found(r"Non-2xx or 3xx responses: (\d+)"):
        result["errors"] += int(non_2xx.group(1))
    if sockets := found(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        result["errors"] += sum(int(n) for n in sockets.groups())
    return result


def streamload(url: str, streams: int, duration: float, cores: str, protocol: str = "openai") -> dict[str, Any]:
    command = [PYTHON, str(HERE / "streamload.py"), "--url", url, "--streams", str(streams),
               "--duration", str(duration), "--protocol", protocol]
    out = subprocess.run(pinned(cores) + command, capture_output=True, text=True)
    try:
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"stream load failed: {out.stderr[-800:]}") from None


class Target:
    """One thing to measure: a command that serves on {port}, or nothing (direct)."""

    def __init__(self, name: str, args: argparse.Namespace, upstream: str, workdir: Path, log: Any) -> None:
        self.name, self.args, self.upstream, self.log = name, args, upstream, log
        # NAME_before is NAME served by the --before checkout, with its own executable and prices
        self.kind = name.removesuffix("_before")
        self.before = self.kind != name
        if self.before and not args.before:
            sys.exit(f"{name}: say which checkout serves it with --before DIR")
        self.root = Path(args.before) if self.before else ROOT
        self.proxy = str(self.root / ".venv" / "bin" / "tokenmeter-proxy") if self.before else PROXY
        self.process: subprocess.Popen[bytes] | None = None
        self.replicas: list[subprocess.Popen[bytes]] = []  # *_x2: the second proxy and the balancer
        self.database: str | None = None
        self.port = free_port()
        self.workdir = workdir

    @property
    def url(self) -> str:
        return self.upstream.removesuffix("/v1") if self.name == "direct" else f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Target:
        if self.name == "direct":
            return self
        environ = clean_environ()
        if self.name.startswith("naive"):
            command = [PYTHON, str(HERE / "baselines.py"), self.name, "--port", str(self.port),
                       "--upstream", self.upstream]
        else:
            self.database = self._database()
            subprocess.run([self.proxy, "migrate", "--database-url", self.database], check=True, stdout=self.log,
                           stderr=subprocess.STDOUT)
            if self.kind.endswith("_budget"):
                # every request then reserves against one budget (and is estimated with tiktoken first)
                environ["TOKENMETER_DEFAULT_BUDGETS"] = '[{"scope": "session", "period": "day", "max_cost": 1000000}]'
            if self.kind.endswith("_otel"):
                # spans and metrics exported over OTLP/HTTP; the fake upstream answers 200 to /v1/traces too
                environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.upstream.removesuffix("/v1")
            if self.kind.endswith("_x2"):
                self._replicas(environ)
                return self
            command = self._serve(self.port)
        self.process = start(command, self.args.proxy_cores, self.log, env=environ)
        wait_port(self.port, self.process)
        return self

    @property
    def messages_path(self) -> str | None:
        """Where this target serves Anthropic's Messages API: None on the --before checkout, which may
        predate routes (it would only forward /v1/messages unmetered)."""
        if not self.name.startswith("tokenmeter"):
            return "/v1/messages"
        return None if self.before else "/anthropic/v1/messages"

    def _serve(self, port: int) -> list[str]:
        assert self.database is not None
        command = [self.proxy, "serve", "--port", str(port), "--upstream", self.upstream, "--database-url",
                   self.database, "--pricing", str(self.root / "config" / "pricing.yaml"), "--admin-token", "bench",
                   "--workers", str(self.args.workers)]
        if not self.before:
            routes, origin = self.workdir / "routes.yaml", self.upstream.removesuffix("/v1")
            routes.write_text(f"routes:\n  anthropic: {{upstream: {origin}, protocol: anthropic}}\n")
            command += ["--routes", str(routes)]
        return command

    def _replicas(self, environ: dict[str, str]) -> None:
        """Two proxies sharing one database behind nginx, configured as deploy/nginx.conf (round
        robin); `process` is the first proxy, `replicas` the second and nginx."""
        if not shutil.which("nginx"):
            sys.exit("the *_x2 targets need nginx: apt-get install -y nginx")
        ports = [free_port(), free_port()]
        proxies = [start(self._serve(port), self.args.proxy_cores, self.log, env=environ) for port in ports]
        config = (ROOT / "deploy" / "nginx.conf").read_text()
        config = config.replace("server proxy-1:8080;", f"server 127.0.0.1:{ports[0]};")
        config = config.replace("server proxy-2:8080;", f"server 127.0.0.1:{ports[1]};")
        config = config.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        nginx = self.workdir / f"nginx-{self.port}"
        nginx.mkdir()
        (nginx / "nginx.conf").write_text(f"daemon off;\npid {nginx}/nginx.pid;\nerror_log {nginx}/error.log;\n"
                                          + config.replace("http {", f"http {{\n  access_log off;\n"
                                                           f"  client_body_temp_path {nginx};", 1))
        balancer = start(["nginx", "-p", str(nginx), "-c", str(nginx / "nginx.conf")], self.args.proxy_cores,
                         self.log)
        self.process, self.replicas = proxies[0], [proxies[1], balancer]
        for port, process in zip([*ports, self.port], [*proxies, balancer], strict=True):
            wait_port(port, process)

    def __exit__(self, *_: object) -> None:
        for process in [self.process, *self.replicas]:
            stop(process)
        if self.database and self.database.startswith("postgresql"):
            _drop_postgres(self.database)

    def _database(self) -> str:
        if "_pg" not in self.name:
            return f"sqlite:///{self.workdir / (self.name + '.db')}"
        return create_postgres()

    def cpu(self) -> float:
        return sum(cpu_seconds(process.pid) for process in [self.process, *self.replicas] if process is not None)


def clean_environ() -> dict[str, str]:
    """This environment without the TOKENMETER_ and OTEL_ settings, which would leak into the proxies."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("TOKENMETER_", "OTEL_"))}


def create_postgres() -> str:
    """A new, empty PostgreSQL database (drop it with `_drop_postgres`); its URL."""
    name = f"tokenmeter_bench_{uuid.uuid4().hex[:8]}"
    _psql(f'CREATE DATABASE "{name}"')
    return POSTGRES.rsplit("/", 1)[0] + "/" + name


def _psql(sql: str) -> None:
    subprocess.run(["psql", POSTGRES.replace("+psycopg", ""), "-qAtc", sql], check=True, capture_output=True)


def _drop_postgres(url: str) -> None:
    _psql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def measure(target: Target, args: argparse.Namespace, load_cores: str) -> list[dict[str, Any]]:
    rows = []
    url = target.url + "/v1/chat/completions"
    for scenario in args.scenarios:
        if scenario == "nonstream":
            for connections in args.concurrency:
                wrk(url, connections, args.warmup, load_cores)
                before = target.cpu()
                result = wrk(url, connections, args.duration, load_cores)
                rows.append(_row(target, f"nonstream c={connections}", result, before, result["requests"]))
        elif scenario == "stream":
            for streams in args.streams:
                before = target.cpu()
                result = streamload(url, streams, args.duration, load_cores)
                rows.append(_row(target, f"stream x{streams}", result, before, result["streams"]))
        elif scenario == "astream" and target.messages_path:
            for streams in args.streams:
                before = target.cpu()
                result = streamload(target.url + target.messages_path, streams, args.duration, load_cores,
                                    "anthropic")
                rows.append(_row(target, f"astream x{streams}", result, before, result["streams"]))
        elif scenario == "memory" and target.process:
            rows.append(_memory(target, url, args, load_cores))
        elif scenario == "bigprompt" and target.process:
            rows.append(_big_prompt(target, url, args, load_cores))
        elif scenario == "mixed" and target.process and target.name.startswith("tokenmeter"):
            rows.append(_mixed(target, args, load_cores))
    return rows


def _row(target: Target, scenario: str, result: dict[str, Any], before: float, count: int) -> dict[str, Any]:
    cpu = round((target.cpu() - before) * 1e6 / max(count, 1), 1) if target.process else None
    row = {"target": target.name, "scenario": scenario, **result, "cpu_us": cpu}
    print(f"  {target.name:22} {scenario:15} " + "  ".join(f"{k} {v}" for k, v in result.items() if k != "requests")
          + f"  cpu {cpu} µs", file=sys.stderr, flush=True)
    return row


def _memory(target: Target, url: str, args: argparse.Namespace, load_cores: str) -> dict[str, Any]:
    """RSS after a warm-up of 10,000 requests and after --memory-requests more."""
    assert target.process is not None
    wrk(url, 64, max(args.warmup, 5), load_cores)
    warm = rss_mb(target.process.pid)
    done, started = 0, time.time()
    while done < args.memory_requests:
        done += wrk(url, 64, 10, load_cores)["requests"]
    row = {"target": target.name, "scenario": f"memory {done:,} req", "rss_warm_mb": warm,
           "rss_end_mb": rss_mb(target.process.pid), "seconds": round(time.time() - started)}
    print(f"  {target.name:22} memory: RSS {row['rss_warm_mb']} MB after warm-up, {row['rss_end_mb']} MB after "
          f"{done:,} requests", file=sys.stderr, flush=True)
    return row


def _big_prompt(target: Target, url: str, args: argparse.Namespace, load_cores: str) -> dict[str, Any]:
    """p99 of small requests alone, then beside a client sending 100,000-token prompts back to
    back (run it on a *_budget target, so every prompt is counted with tiktoken first)."""
    alone = wrk(url, 8, args.duration, load_cores)
    sender = start([PYTHON, str(HERE / "bigprompt.py"), "--url", url, "--seconds", str(args.duration + 2)],
                   load_cores, target.log)
    time.sleep(1)
    beside = wrk(url, 8, args.duration, load_cores)
    sender.wait(60)
    row = {"target": target.name, "scenario": "bigprompt c=8", "p99_alone_ms": alone["p99_ms"],
           "p99_beside_ms": beside["p99_ms"], "added_p99_ms": round(beside["p99_ms"] - alone["p99_ms"], 3),
           "errors": alone["errors"] + beside["errors"]}
    print(f"  {target.name:22} bigprompt: small-request p99 {alone['p99_ms']} ms alone, {beside['p99_ms']} ms "
          "beside 100k-token prompts", file=sys.stderr, flush=True)
    return row


def _mixed(target: Target, args: argparse.Namespace, load_cores: str) -> dict[str, Any]:
    """--mixed-requests at 64 concurrency, 30% streamed, 5% answered with an upstream error:
    no error may come from the proxy, no record may be lost, and memory must stay flat."""
    assert target.process is not None
    warm = [PYTHON, str(HERE / "mixedload.py"), "--url", target.url, "--admin-token", "bench"]
    subprocess.run(pinned(load_cores) + warm + ["--requests", "2000"], capture_output=True, check=True)
    before = rss_mb(target.process.pid)
    out = subprocess.run(pinned(load_cores) + warm + ["--requests", str(args.mixed_requests)], capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    row = {"target": target.name, "scenario": f"mixed {args.mixed_requests:,} req", **result,
           "rss_warm_mb": before, "rss_end_mb": rss_mb(target.process.pid)}
    print(f"  {target.name:22} mixed: {result['proxy_errors']} proxy errors, {result['records_lost']} records lost, "
          f"{result['tokens_off']} tokens off what the upstream reported, "
          f"RSS {before} -> {row['rss_end_mb']} MB", file=sys.stderr, flush=True)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    direct = {row["scenario"]: row for row in rows if row["target"] == "direct"}
    lines = ["| target | scenario | throughput | vs direct | p50 ms | added p50 ms | p99 ms | CPU µs/req | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "rps" not in row and "streams_per_s" not in row:
            continue
        base = direct.get(row["scenario"], {})
        throughput = row.get("rps", row.get("streams_per_s"))
        base_throughput = base.get("rps", base.get("streams_per_s"))
        p50 = row.get("p50_ms", row.get("ttfb_p50_ms"))
        base_p50 = base.get("p50_ms", base.get("ttfb_p50_ms"))
        p99 = row.get("p99_ms", row.get("ttfb_p99_ms"))
        lines.append(" | ".join([
            f"| {row['target']}", row["scenario"], f"{throughput:.1f}",
            f"{throughput / base_throughput:.2f}x" if base_throughput else "",
            f"{p50:.3f}" if p50 is not None else "", f"{p50 - base_p50:+.3f}" if None not in (p50, base_p50) else "",
            f"{p99:.3f}" if p99 is not None else "", str(row.get("cpu_us") or ""), f"{row['errors']} |",
        ]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="direct,naive_httpx,naive_aiohttp,tokenmeter,tokenmeter_budget,"
                                          "tokenmeter_otel,tokenmeter_pg,tokenmeter_pg_budget")
    parser.add_argument("--scenarios", default="nonstream,stream,astream")
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--streams", default="64,256")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--proxy-cores", default="0", help="cores for the proxy under test (taskset list)")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--mixed-requests", type=int, default=20_000)
    parser.add_argument("--before", help="a checkout of an earlier commit, with its own .venv, serving the "
                                         "NAME_before targets")
    parser.add_argument("--json", help="also write the raw rows here")
    args = parser.parse_args()
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    args.streams = [int(n) for n in args.streams.split(",")]
    args.scenarios = args.scenarios.split(",")
    if not shutil.which("wrk"):
        sys.exit("bench needs wrk: apt-get install -y wrk")
    cores = os.cpu_count() or 1
    load_cores = "1" if cores == 2 else (f"1-{cores - 1}" if cores > 2 else "0")
    workdir = Path(tempfile.mkdtemp(prefix="tokenmeter-bench-"))
    log = open(workdir / "processes.log", "ab")  # noqa: SIM115 (closed below)
    upstream_port = free_port()
    upstream = start([PYTHON, str(HERE / "upstream.py"), "--port", str(upstream_port)], load_cores, log)
    rows: list[dict[str, Any]] = []
    try:
        wait_port(upstream_port, upstream)
        for name in args.only.split(","):
            with Target(name, args, f"http://127.0.0.1:{upstream_port}/v1", workdir, log) as target:
                rows += measure(target, args, load_cores)
    finally:
        stop(upstream)
        log.close()
    print(table(rows))
    for row in rows:
        if "rss_warm_mb" in row or "added_p99_ms" in row or "records_lost" in row:
            print(f"- {row['target']} {row['scenario']}: " + ", ".join(
                f"{k} {v}" for k, v in row.items() if k not in ("target", "scenario")))
    print(f"\n{time.strftime('%Y-%m-%d')}, {cores} cores; proxies on core(s) {args.proxy_cores} with "
          f"{args.workers} worker(s); upstream and load on {load_cores}; {args.duration} s per measurement.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
