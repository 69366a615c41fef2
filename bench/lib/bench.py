#!/usr/bin/env python3
"""Timing and statistics for bench/run (Python 3.11 standard library only).

Subcommands (bench/run calls them in order; each reads and extends WORK/state.json):
  setup     environment, catalog, API key, installs of the two bench stacks (worker running)
  redeploy  hook -> healthy new container vs. the plain docker CLI cycle; no-op vs. docker pull
  pickup    request event -> DeploymentStarted, sequential no-op redeploys
  ingest    parse one wrk + pgbench pair into the state
  report    the table on stdout and bench/results/latest.json

Every loop here has a bound; a bound that is hit is an error, not a hang.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.010  # how often a deployment is polled while it runs
DEPLOY_LIMIT_S = 120.0  # a deployment that has not ended by then fails the benchmark
HEALTH_LIMIT_S = 60.0  # same for the CLI baseline's container
TERMINAL = {"success", "failure", "error", "inactive"}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"error: {msg}")
    sys.exit(1)


# --- state -------------------------------------------------------------------------------


class State:
    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def __getitem__(self, k):
        return self.data[k]

    def get(self, k, default=None):
        return self.data.get(k, default)

    def __setitem__(self, k, v):
        self.data[k] = v
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


# --- HTTP ----------------------------------------------------------------------------------


class Api:
    """One keep-alive connection to the API (reconnects once on a dropped connection)."""

    def __init__(self, port: int, admin_token: str):
        self.port = port
        self.admin = admin_token
        self.conn = None

    def request(self, method, path, body=None, key=None, admin=True):
        headers = {}
        if body is not None:
            body = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if key is not None:
            headers["X-Api-Key"] = key
        elif admin:
            headers["authorization"] = f"Bearer {self.admin}"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return resp.status, data

    def expect(self, status, method, path, body=None, key=None):
        got, data = self.request(method, path, body, key)
        if got != status:
            die(f"{method} {path}: expected {status}, got {got}: {data}")
        return data

    def wait_terminal(self, deployment: str) -> tuple[dict, float]:
        """Polls every POLL_S until the deployment ends; returns it and the monotonic time
        the end was observed."""
        deadline = time.monotonic() + DEPLOY_LIMIT_S
        while True:
            d = self.expect(200, "GET", f"/api/deployments/{deployment}")
            now = time.monotonic()
            if d["status"] in TERMINAL:
                return d, now
            if now > deadline:
                die(f"deployment {deployment} still '{d['status']}' after {DEPLOY_LIMIT_S:.0f} s")
            time.sleep(POLL_S)


# --- docker / psql -------------------------------------------------------------------------


def run(*args: str, timeout: float = 120) -> str:
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        die(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout.strip()


def docker(*args: str, timeout: float = 120) -> str:
    return run("docker", *args, timeout=timeout)


def psql(url: str, sql: str) -> list[list[str]]:
    out = run("psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", url, "-c", sql)
    return [line.split("\t") for line in out.splitlines() if line]


def stack_containers(stack: str) -> list[str]:
    out = docker(
        "ps", "-aq", "--no-trunc",
        "--filter", f"label=com.docker.compose.project={stack}",
        "--filter", "label=com.docker.compose.service=web",
    )
    return out.split()


def move_tag(source: str, target: str) -> None:
    """Points the registry tag `target` at `source`'s image, leaving no local `target` tag
    (as CI on another machine would): the next pull really asks the registry."""
    docker("tag", source, target)
    docker("push", "-q", target)
    docker("rmi", target)


def image_id(ref: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", ref)


def events_of(state: State, ids: list[str]) -> dict[str, dict[str, float]]:
    """deployment id -> {event type: recorded_at as epoch seconds} (first of each type)."""
    if not ids:
        return {}
    streams = ",".join(f"'deployment-{i}'" for i in ids)
    rows = psql(
        state["database_url"],
        "SELECT stream_id, event_type, extract(epoch from recorded_at)::numeric(20,6) "
        f"FROM events WHERE stream_id IN ({streams}) ORDER BY global_position",
    )
    out: dict[str, dict[str, float]] = {}
    for stream_id, etype, at in rows:
        out.setdefault(stream_id.removeprefix("deployment-"), {}).setdefault(etype, float(at))
    return out


# --- statistics ----------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(1, -(-len(s) * p // 100))  # ceil(n * p / 100), at least 1
    return s[int(k) - 1]


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# --- setup ---------------------------------------------------------------------------------


MANIFEST = """name: {stack}
x-shiplog:
  version: 1.0.0
  variables: {{}}
services:
  web:
    image: {image}
    ports:
      - "127.0.0.1::8080"
"""

# The ingest-only stacks: no port, no health check (installed in ~1 s, then their
# containers are removed: the hooks only consult Shiplog's records).
SPREAD_MANIFEST = """name: {stack}
x-shiplog:
  version: 1.0.0
  variables: {{}}
services:
  web:
    image: {image}
    healthcheck:
      disable: true
"""


def cmd_setup(state: State) -> None:
    api = Api(state["port"], state["admin_token"])
    deadline = time.monotonic() + 30
    while True:
        try:
            if api.request("GET", "/health", admin=False)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            die("the API did not answer /health within 30 s (see api.log)")
        time.sleep(0.1)

    env = state["environment"]
    api.expect(201, "POST", "/api/environments",
               {"id": env, "name": env, "dockerEndpoint": state["docker_endpoint"]})
    catalog = Path(state["work"]) / "catalog"
    catalog.mkdir(exist_ok=True)
    move_tag(state["image_v1"], state["moving_ref"])
    (catalog / "replace.yml").write_text(
        MANIFEST.format(stack=state["stack_replace"], image=state["moving_ref"]))
    (catalog / "noop.yml").write_text(
        MANIFEST.format(stack=state["stack_noop"], image=state["noop_ref"]))
    for stack in state["spread_stacks"]:
        (catalog / f"{stack}.yml").write_text(
            SPREAD_MANIFEST.format(stack=stack, image=state["noop_ref"]))
    want = 2 + len(state["spread_stacks"])
    src = api.expect(201, "POST", "/api/catalog/sources", {"type": "directory", "path": str(catalog)})
    if src.get("stacksLoaded") != want:
        die(f"catalog source loaded {src.get('stacksLoaded')} stacks, expected {want}: {src}")
    key = api.expect(201, "POST", "/api/keys",
                     {"name": "bench", "permissions": ["Hooks.Redeploy"], "environmentId": env})["key"]
    state["key"] = key

    # Install both stacks for real through the worker; the worker needs up to its discovery
    # interval (2 s) to start consuming the new environment's queue.
    for stack in (state["stack_replace"], state["stack_noop"]):
        d = api.expect(202, "POST", f"/api/environments/{env}/stacks",
                       {"stackName": stack, "version": "1.0.0", "variables": {}})
        done, _ = api.wait_terminal(d["deploymentId"])
        if done["status"] != "success":
            die(f"install of {stack} ended '{done['status']}': {done.get('message')}")
        if len(stack_containers(stack)) != 1:
            die(f"install of {stack}: expected one container")
        log(f"installed {stack}")


def remove_stack_from_docker(stack: str) -> None:
    ids = stack_containers(stack)
    if ids:
        docker("rm", "-f", "-v", *ids)
    docker("network", "rm", f"{stack}_default")


def cmd_spread_setup(state: State, keys: int, batch: int) -> None:
    """Keys and installed stacks for the spread ingest variant. Each stack is installed
    through the worker, then its container and network are removed at once (Docker's
    default address pools hold only ~30 networks, and idle containers would only add
    noise): the hooks consult Shiplog's records, not Docker."""
    api = Api(state["port"], state["admin_token"])
    env = state["environment"]
    state["spread_keys"] = [
        api.expect(201, "POST", "/api/keys",
                   {"name": f"bench-{i}", "permissions": ["Hooks.Redeploy"], "environmentId": env})["key"]
        for i in range(keys)
    ]
    stacks = state["spread_stacks"]
    for start in range(0, len(stacks), batch):
        group = stacks[start:start + batch]
        ids = [api.expect(202, "POST", f"/api/environments/{env}/stacks",
                          {"stackName": st, "version": "1.0.0", "variables": {}})["deploymentId"]
               for st in group]
        for st, dep in zip(group, ids):
            d, _ = api.wait_terminal(dep)
            if d["status"] != "success":
                die(f"install of {st} ended '{d['status']}': {d.get('message')}")
            remove_stack_from_docker(st)
    log(f"spread: {keys} keys, {len(stacks)} stacks installed (containers removed again)")


# --- redeploy latency ----------------------------------------------------------------------


def cli_cycle(ref: str, name: str, network: str) -> dict[str, float]:
    """The plain CLI way: pull, stop, rm, run, poll `docker inspect` until healthy."""
    t = {}
    t0 = time.monotonic()
    docker("pull", "-q", ref)
    t["pull"] = time.monotonic()
    docker("stop", name)
    t["stop"] = time.monotonic()
    docker("rm", name)
    t["rm"] = time.monotonic()
    docker("run", "-d", "--name", name, "--network", network, "-p", "127.0.0.1::8080", ref)
    t["run"] = time.monotonic()
    deadline = t["run"] + HEALTH_LIMIT_S
    while True:  # as fast as the CLI answers: no sleep, the tightest honest baseline
        status = docker("inspect", "-f", "{{.State.Health.Status}}", name)
        if status == "healthy":
            break
        if status == "unhealthy" or time.monotonic() > deadline:
            die(f"CLI baseline container {name} is '{status}'")
    t["healthy"] = time.monotonic()
    return {
        "total": t["healthy"] - t0,
        "pull": t["pull"] - t0,
        "stop": t["stop"] - t["pull"],
        "rm": t["rm"] - t["stop"],
        "run": t["run"] - t["rm"],
        "healthy_wait": t["healthy"] - t["run"],
    }


HOOK_ANSWER_S: list[float] = []  # how long each hook call itself took


def hook_redeploy(api: Api, state: State, stack: str) -> tuple[str, float, float]:
    """Calls the hook; returns (deployment id, monotonic send time, monotonic end time)."""
    t0 = time.monotonic()
    data = api.expect(200, "POST", "/api/hooks/redeploy", {"stackName": stack}, key=state["key"])
    HOOK_ANSWER_S.append(time.monotonic() - t0)
    if data.get("joined") or data.get("replayed"):
        die(f"hook answer for {stack} joined/replayed an earlier deployment: {data}")
    d, t1 = api.wait_terminal(data["deploymentId"])
    if d["status"] != "success":
        die(f"redeploy {data['deploymentId']} of {stack} ended '{d['status']}': {d.get('message')}")
    return data["deploymentId"], t0, t1


def cmd_redeploy(state: State, runs: int, noop_runs: int) -> None:
    api = Api(state["port"], state["admin_token"])
    stack = state["stack_replace"]
    ref = state["moving_ref"]
    cli = state["cli_container"]
    contents = [state["image_v2"], state["image_v1"]]  # installed with v1: the first run moves to v2
    # The CLI baseline's own container, started from the same tag, healthy before we begin.
    docker("pull", "-q", ref)
    docker("network", "create", state["cli_network"])
    docker("run", "-d", "--name", cli, "--network", state["cli_network"], "-p", "127.0.0.1::8080", ref)
    deadline = time.monotonic() + HEALTH_LIMIT_S
    while docker("inspect", "-f", "{{.State.Health.Status}}", cli) != "healthy":
        if time.monotonic() > deadline:
            die("CLI baseline container never became healthy")
        time.sleep(0.05)

    shiplog, baseline, ids = [], [], []
    for i in range(runs):
        content = contents[i % 2]
        move_tag(content, ref)
        want_image = image_id(content)
        before = stack_containers(stack)

        def ours():
            dep, t0, t1 = hook_redeploy(api, state, stack)
            after = stack_containers(stack)
            if len(after) != 1 or after == before:
                die(f"redeploy {dep}: expected one new container, had {before}, now {after}")
            got = docker("inspect", "-f", "{{.Image}}", after[0])
            if got != want_image:
                die(f"redeploy {dep}: container runs {got}, expected {want_image}")
            ids.append(dep)
            shiplog.append({"deployment": dep, "total": t1 - t0, "t0_wall": time.time() - (time.monotonic() - t0)})

        def theirs():
            b = cli_cycle(ref, cli, state["cli_network"])
            got = docker("inspect", "-f", "{{.Image}}", cli)
            if got != want_image:
                die(f"CLI baseline runs {got}, expected {want_image}")
            baseline.append(b)

        # Alternate who goes first, so neither always finds the tag freshly moved.
        for f in ((ours, theirs) if i % 2 == 0 else (theirs, ours)):
            f()
        log(f"redeploy {i + 1}/{runs}: shiplog {shiplog[-1]['total'] * 1000:.0f} ms, "
            f"CLI {baseline[-1]['total'] * 1000:.0f} ms")

    # Where the time goes, from the events (recorded_at = each append transaction's start).
    ev = events_of(state, ids)
    phases = {k: [] for k in ("send_to_request", "request_to_started", "started_to_pulled",
                              "pulled_to_replaced", "replaced_to_succeeded", "succeeded_to_observed")}
    answers = list(HOOK_ANSWER_S)
    for run_ in shiplog:
        e = ev[run_["deployment"]]
        phases["send_to_request"].append(e["RedeployRequested"] - run_["t0_wall"])
        phases["request_to_started"].append(e["DeploymentStarted"] - e["RedeployRequested"])
        phases["started_to_pulled"].append(e["ImagePulled"] - e["DeploymentStarted"])
        phases["pulled_to_replaced"].append(e["ContainerReplaced"] - e["ImagePulled"])
        phases["replaced_to_succeeded"].append(e["DeploymentSucceeded"] - e["ContainerReplaced"])
        phases["succeeded_to_observed"].append(
            run_["t0_wall"] + run_["total"] - e["DeploymentSucceeded"])
    ratios = [s["total"] / b["total"] for s, b in zip(shiplog, baseline)]
    state["redeploy"] = {
        "runs": runs,
        "shiplog_s": summary([s["total"] for s in shiplog]),
        "cli_s": summary([b["total"] for b in baseline]),
        "ratio_of_medians": statistics.median([s["total"] for s in shiplog])
        / statistics.median([b["total"] for b in baseline]),
        "median_of_ratios": statistics.median(ratios),
        "shiplog_phases_median_s": {k: statistics.median(v) for k, v in phases.items()},
        "hook_answer_median_s": statistics.median(answers),
        "cli_phases_median_s": {k: statistics.median([b[k] for b in baseline])
                                for k in baseline[0] if k != "total"},
        "samples": {"shiplog_s": [s["total"] for s in shiplog],
                    "cli_s": [b["total"] for b in baseline]},
    }

    # No-op: the digest is unchanged, the container must be too.
    stack = state["stack_noop"]
    noop_ref = state["noop_ref"]
    before = stack_containers(stack)
    ours_t, pull_t, noop_ids = [], [], []
    HOOK_ANSWER_S.clear()
    for i in range(noop_runs):
        def ours():
            dep, t0, t1 = hook_redeploy(api, state, stack)
            if stack_containers(stack) != before:
                die(f"no-op redeploy {dep} replaced the container")
            noop_ids.append(dep)
            ours_t.append(t1 - t0)

        def theirs():
            t0 = time.monotonic()
            docker("pull", "-q", noop_ref)
            pull_t.append(time.monotonic() - t0)

        for f in ((ours, theirs) if i % 2 == 0 else (theirs, ours)):
            f()
    ev = events_of(state, noop_ids)
    for dep in noop_ids:
        if "ServiceUnchanged" not in ev[dep] or "ContainerReplaced" in ev[dep]:
            die(f"no-op redeploy {dep}: events {sorted(ev[dep])}")
    noop_phases = {
        "request_to_started": [ev[d]["DeploymentStarted"] - ev[d]["RedeployRequested"] for d in noop_ids],
        "started_to_pulled": [ev[d]["ImagePulled"] - ev[d]["DeploymentStarted"] for d in noop_ids],
        "pulled_to_succeeded": [ev[d]["DeploymentSucceeded"] - ev[d]["ImagePulled"] for d in noop_ids],
    }
    state["noop"] = {
        "runs": noop_runs,
        "shiplog_s": summary(ours_t),
        "docker_pull_s": summary(pull_t),
        "ratio_of_medians": statistics.median(ours_t) / statistics.median(pull_t),
        "container_unchanged": True,
        "hook_answer_median_s": statistics.median(HOOK_ANSWER_S),
        "shiplog_phases_median_s": {k: statistics.median(v) for k, v in noop_phases.items()},
        "samples": {"shiplog_s": ours_t, "docker_pull_s": pull_t},
    }
    log(f"no-op: shiplog median {statistics.median(ours_t) * 1000:.0f} ms, "
        f"docker pull median {statistics.median(pull_t) * 1000:.0f} ms")


# --- queue pickup --------------------------------------------------------------------------


def cmd_pickup(state: State, runs: int, pause_s: float) -> None:
    api = Api(state["port"], state["admin_token"])
    stack = state["stack_noop"]
    ids = []
    HOOK_ANSWER_S.clear()
    for _ in range(runs):
        dep, _, _ = hook_redeploy(api, state, stack)  # waits for the end: no lease waiting
        ids.append(dep)
        time.sleep(pause_s)
    ev = events_of(state, ids)
    lat = [ev[d]["DeploymentStarted"] - ev[d]["RedeployRequested"] for d in ids]
    state["pickup"] = {"runs": runs, "pause_s": pause_s, "latency_s": summary(lat),
                       "hook_answer_s": summary(list(HOOK_ANSWER_S)), "samples_s": lat}
    log(f"pickup: p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms")


# --- where ingest time goes: CPU accounting and PostgreSQL wait sampling ---------------------


def _proc_times(pid: str) -> tuple[str, int]:
    """(command name, utime + stime + cutime + cstime) in clock ticks."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return comm, sum(int(x) for x in fields[11:15])


SHARED_PG_PROCESSES = ("walwriter", "checkpointer", "background writer")


def _descendants(pid: str) -> list[str]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend((task / "children").read_text().split())
        except OSError:
            pass
    return out


def _cpu_snapshot(state: State, api_pid: str, client_pid: str) -> dict:
    """CPU ticks used so far by the API, by the load client (and its children), by each
    PostgreSQL process working for this run's database (its backends, autovacuum on it) or
    for all (WAL writer, checkpointer, background writer), and by the whole machine."""
    db = state["database_url"].rsplit("/", 1)[1]
    pg = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres:"):
                continue
            if f" {db} " in title or any(title.rstrip().endswith(p) for p in SHARED_PG_PROCESSES):
                pg[d.name] = _proc_times(d.name)[1]
        except (OSError, ValueError):
            continue
    client = {}
    for pid in _descendants(client_pid):
        try:
            client[pid] = _proc_times(pid)[1]
        except (OSError, ValueError):
            pass
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return {"api": _proc_times(api_pid)[1], "postgres": pg, "client": client, "wall": time.monotonic(),
            "machine_busy": sum(vals) - vals[3] - vals[4]}  # all but idle and iowait


def cmd_cpu_window(state: State, api_pid: str, client_pid: str, seconds: float, out: Path) -> None:
    """Cores used by each party over the middle of a load run of `seconds` (1 s cut at each
    end, so that connections are made and still open: per-process ticks of a process that
    ends within the window would be lost)."""
    edge = 1.0 if seconds >= 3 else 0.0
    time.sleep(edge)
    b = _cpu_snapshot(state, api_pid, client_pid)
    time.sleep(max(0.5, seconds - 2 * edge))
    a = _cpu_snapshot(state, api_pid, client_pid)
    hz = os.sysconf("SC_CLK_TCK")
    wall = a["wall"] - b["wall"]

    def by_pid(k):  # a process absent from the first snapshot started within the window
        return sum(t - b[k].get(pid, 0) for pid, t in a[k].items()) / hz / wall

    cpu = {"api": (a["api"] - b["api"]) / hz / wall, "postgres": by_pid("postgres"),
           "client": by_pid("client"), "machine_busy": (a["machine_busy"] - b["machine_busy"]) / hz / wall}
    cpu["other"] = cpu["machine_busy"] - cpu["api"] - cpu["postgres"] - cpu["client"]
    cpu = {k: round(v, 3) for k, v in cpu.items()}
    cpu["cores"] = os.cpu_count() or 1
    out.write_text(json.dumps(cpu))


WAIT_SAMPLER_SQL = """
CREATE TEMP TABLE bench_waits (ev text);
DO $$
BEGIN
  FOR i IN 1..{n} LOOP
    PERFORM pg_stat_clear_snapshot();
    INSERT INTO bench_waits
      SELECT CASE
               WHEN state = 'active' AND wait_event IS NULL THEN 'running (CPU)'
               WHEN state = 'active' THEN 'waiting: ' || wait_event_type || '/' || wait_event
               ELSE state || ' (waiting for the client)'
             END
      FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND backend_type = 'client backend' AND state <> 'idle';
    PERFORM pg_sleep({interval});
  END LOOP;
END $$;
SELECT ev, count(*) FROM bench_waits GROUP BY ev ORDER BY 2 DESC;
"""


def cmd_wait_sample(state: State, seconds: float, out: Path, interval: float = 0.05) -> None:
    """Samples what the database's busy backends are doing, every `interval` seconds."""
    n = max(1, int(seconds / interval))
    rows = psql(state["database_url"], WAIT_SAMPLER_SQL.format(n=n, interval=interval))
    out.write_text(json.dumps({"samples": n, "counts": {ev: int(c) for ev, c in rows}}))


# --- ingest --------------------------------------------------------------------------------


def wrk_result(path: Path) -> dict:
    for line in path.read_text().splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line.removeprefix("BENCH_JSON "))
    die(f"no result line in {path}")


def cmd_pgbench(state: State, clients: int, pgbench_out: Path, pgbench_logs: list[str],
                waits: Path | None, cpu_file: Path | None) -> None:
    tps = None
    for line in pgbench_out.read_text().splitlines():
        if line.startswith("tps = ") and "without initial connection time" in line:
            tps = float(line.split()[2])
    if tps is None:
        die(f"no tps line in {pgbench_out}")
    lat = []
    for f in pgbench_logs:
        for line in Path(f).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]) / 1e6)
    pg = state.get("pgbench", {})
    pg[str(clients)] = {"tps": tps, "p50_s": pct(lat, 50), "p99_s": pct(lat, 99), "transactions": len(lat),
                        "db_backend_states": json.loads(waits.read_text()) if waits and waits.exists() else None,
                        "cpu_cores_used": json.loads(cpu_file.read_text()) if cpu_file and cpu_file.exists() else None}
    state["pgbench"] = pg
    log(f"pgbench c={clients}: {tps:.0f} tps (p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms)")


def cmd_ingest(state: State, variant: str, clients: int, wrk_out: Path, warmup_out: Path | None,
               cpu_file: Path | None, waits: Path | None) -> None:
    wrk = wrk_result(wrk_out)
    cpu = json.loads(cpu_file.read_text()) if cpu_file and cpu_file.exists() else None
    wait_counts = json.loads(waits.read_text()) if waits and waits.exists() else None
    if warmup_out is not None:
        w = wrk_result(warmup_out)
        state["warmup_ok"] = state.get("warmup_ok", 0) + w["requests"] - w["errors"]["status"]
        state["in_flight_bound"] = state.get("in_flight_bound", 0) + clients
    state["in_flight_bound"] = state.get("in_flight_bound", 0) + clients
    ok = wrk["requests"] - wrk["errors"]["status"]
    errors = sum(wrk["errors"].values())
    pg = state["pgbench"][str(clients)]
    tps = pg["tps"]
    rps = ok / wrk["duration_s"]
    entry = {
        "clients": clients,
        "hook_requests": wrk["requests"],
        "hook_ok": ok,
        "hook_errors": errors,
        "hook_errors_detail": wrk["errors"],
        "hook_rps": rps,
        "hook_p50_s": wrk["latency_us"]["p50"] / 1e6,
        "hook_p99_s": wrk["latency_us"]["p99"] / 1e6,
        "cpu_cores_used": cpu,
        "api_cpu_ms_per_request": (cpu["api"] * 1000 / rps) if cpu and rps else None,
        # (the window is the middle of the run; the rate is the whole run's)
        "postgres_cpu_ms_per_request": (cpu["postgres"] * 1000 / rps) if cpu and rps else None,
        "db_backend_states": wait_counts,
        "pgbench_tps": tps,
        "pgbench_p50_s": pg["p50_s"],
        "pgbench_p99_s": pg["p99_s"],
        "ratio": rps / tps,
    }
    ingest = state.get("ingest", {})
    ingest.setdefault(variant, {})[str(clients)] = entry
    state["ingest"] = ingest
    log(f"ingest {variant} c={clients}: hooks {rps:.0f}/s (p50 {entry['hook_p50_s'] * 1000:.1f} ms, "
        f"p99 {entry['hook_p99_s'] * 1000:.1f} ms, {errors} errors), pgbench {tps:.0f} tps; "
        f"CPU cores {cpu}; backends {wait_counts and wait_counts['counts']}")


INGEST_COUNTS_SQL = """
SELECT (SELECT count(*) FROM events WHERE event_type = 'RedeployRequested'),
       (SELECT count(*) FROM events WHERE event_type = 'RedeployJoined'),
       (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM events
          WHERE stream_id LIKE 'deployment-%' GROUP BY stream_id) s)
"""


def cmd_ingest_mark(state: State) -> None:
    requested, joined, _ = psql(state["database_url"], INGEST_COUNTS_SQL)[0]
    state["ingest_before"] = {"requested": int(requested), "joined": int(joined)}


def cmd_ingest_check(state: State) -> None:
    """Every 200 the hooks answered is a durable event: a new request (with its job) or a
    join of a queued one."""
    requested, joined, longest = (int(x) for x in psql(state["database_url"], INGEST_COUNTS_SQL)[0])
    before = state["ingest_before"]
    answered = sum(e["hook_ok"] for v in state["ingest"].values() for e in v.values())
    answered += state.get("warmup_ok", 0)
    new_requested = requested - before["requested"]
    new_joined = joined - before["joined"]
    state["ingest_check"] = {
        "hook_200s_incl_warmup": answered,
        "new_deployments": new_requested,
        "joins": new_joined,
        "longest_deployment_stream": longest,
        # wrk does not count the requests still in flight when it stops (at most one per
        # connection per run), but the API completes them.
        "unanswered_in_flight": new_requested + new_joined - answered,
        "in_flight_bound": state.get("in_flight_bound"),
        "consistent": 0 <= new_requested + new_joined - answered <= state.get("in_flight_bound", 0),
    }


# --- facts ---------------------------------------------------------------------------------


def first_line(*args: str) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_busy(seconds: float) -> float:
    """Fraction of all cores busy (not idle, not iowait) over `seconds`."""
    def read():
        vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(vals), vals[3] + vals[4]
    t0, i0 = read()
    time.sleep(seconds)
    t1, i1 = read()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def cmd_facts(state: State, settings: dict) -> None:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    commit = first_line("git", "rev-parse", "--short", "HEAD")
    # What the binaries were built from: changes to bench/ itself do not count.
    dirty = [line for line in subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.splitlines() if line[3:] and not line[3:].startswith("bench/")]
    state["facts"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": commit + (f" (+ uncommitted changes in {len(dirty)} files outside bench/)" if dirty else ""),
        "nproc": first_line("nproc"),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": first_line("uname", "-sr"),
        "rustc": first_line("rustc", "-V"),
        "shiplog-api": first_line(state["api_bin"], "--version"),
        "shiplog-worker": first_line(state["worker_bin"], "--version"),
        "postgresql": psql(state["database_url"], "SHOW server_version")[0][0],
        "docker engine": first_line("docker", "version", "-f", "{{.Server.Version}}"),
        "registry": first_line("docker-registry", "--version"),
        "pgbench": first_line("pgbench", "--version"),
        "wrk": first_line("wrk", "-v").split(" Copyright")[0],
        "python": sys.version.split()[0],
        "machine busy before the run": f"{machine_busy(2) * 100:.0f}% of all cores over 2 s"
        + (f" (after waiting {settings['quiet_waited_s']} s for a quieter machine)"
           if settings.get("quiet_waited_s") else ""),
    }
    state["settings"] = settings


# --- report --------------------------------------------------------------------------------


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms"


def cmd_report(state: State, out: Path) -> None:
    rows = []  # figure, shiplog, baseline, ratio, aim, verdict

    def add(figure, ours, base, ratio, aim, ok):
        rows.append((figure, ours, base, f"{ratio:.2f}" if ratio is not None else "-", aim,
                     "" if ok is None else ("ok" if ok else "MISSED")))

    labels = {"one": "1 key -> 1 stack", "spread": "{k} keys -> {s} stacks"}
    for variant, by_clients in state.get("ingest", {}).items():
        label = labels.get(variant, variant).format(
            k=len(state.get("spread_keys", [])), s=len(state.get("spread_stacks", [])))
        for c, e in sorted(by_clients.items(), key=lambda kv: int(kv[0])):
            add(f"hook ingest, {c} clients, {label}",
                f"{e['hook_rps']:.0f} req/s (p50 {ms(e['hook_p50_s'])}, p99 {ms(e['hook_p99_s'])})"
                + (f", {e['hook_errors']} errors" if e["hook_errors"] else ""),
                f"pgbench {e['pgbench_tps']:.0f} tps (p50 {ms(e['pgbench_p50_s'])}, p99 {ms(e['pgbench_p99_s'])})",
                e["ratio"], ">= 0.5", e["ratio"] >= 0.5 and e["hook_errors"] == 0)
    r = state.get("redeploy")
    if r:
        add(f"redeploy, new image (median of {r['runs']})",
            f"{ms(r['shiplog_s']['median'])} (max {ms(r['shiplog_s']['max'])})",
            f"CLI pull/stop/rm/run/healthy {ms(r['cli_s']['median'])} (max {ms(r['cli_s']['max'])})",
            r["ratio_of_medians"], "<= 1.15", r["ratio_of_medians"] <= 1.15)
    n = state.get("noop")
    if n:
        add(f"redeploy, digest unchanged (median of {n['runs']})",
            ms(n["shiplog_s"]["median"]), f"docker pull {ms(n['docker_pull_s']['median'])}",
            n["ratio_of_medians"], "<= 1.2", n["ratio_of_medians"] <= 1.2)
    p = state.get("pickup")
    if p:
        lat = p["latency_s"]
        add(f"queue pickup, request -> started ({p['runs']} runs)",
            f"p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])}", "-", None, "p50 <= 10 ms",
            lat["p50"] <= 0.010)

    facts = state["facts"]
    lines = ["", "Shiplog benchmark  (" + facts["date"] + ", one loopback run)", ""]
    width = max(len(k) for k in facts)
    for k, v in facts.items():
        lines.append(f"  {k:<{width}}  {v}")
    lines.append("")
    head = ("figure", "shiplog", "baseline (same run)", "ratio", "aim", "")
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*head).rstrip())
    lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
    for row in rows:
        lines.append(fmt.format(*row).rstrip())
    if r:
        lines += ["", "Where a replacing redeploy's time goes (medians; from event recorded_at):",
                  f"  shiplog  {'hook answer (200)':<24} {ms(r['hook_answer_median_s'])}"]
        for k, v in r["shiplog_phases_median_s"].items():
            lines.append(f"  shiplog  {k:<24} {ms(v)}")
        for k, v in r["cli_phases_median_s"].items():
            lines.append(f"  CLI      {k:<24} {ms(v)}")
    if n:
        lines += ["", "Where a no-op redeploy's time goes (medians):",
                  f"  shiplog  {'hook answer (200)':<24} {ms(n['hook_answer_median_s'])}"]
        for k, v in n["shiplog_phases_median_s"].items():
            lines.append(f"  shiplog  {k:<24} {ms(v)}")
    if state.get("ingest"):
        lines += ["", f"CPU over each load run (cores busy, of {facts['nproc']}; client = wrk or pgbench; "
                  "postgres = this database's",
                  "backends + WAL writer, checkpointer, bgwriter; other = dockerd and anything else "
                  "on the machine):"]

        def cpu_line(name, cpu, rate):
            if not cpu:
                return
            per = (f"  ->  per request: API {cpu['api'] * 1000 / rate:.2f} ms, "
                   f"postgres {cpu['postgres'] * 1000 / rate:.2f} ms CPU") if name[0] != "p" else ""
            lines.append(f"  {name:<11} API {cpu['api']:.2f}, postgres {cpu['postgres']:.2f}, "
                         f"client {cpu['client']:.2f}, other {cpu['other']:.2f}" + per)

        for c, v in sorted(state.get("pgbench", {}).items(), key=lambda kv: int(kv[0])):
            cpu_line(f"pgbench {c}", v.get("cpu_cores_used"), v["tps"])
        for variant, by_clients in state["ingest"].items():
            for c, e in sorted(by_clients.items(), key=lambda kv: int(kv[0])):
                cpu_line(f"{variant} {c}", e.get("cpu_cores_used"), e["hook_rps"])
        lines += ["", "What the database's busy backends were doing (share of samples, every 50 ms):"]
        runs = [(f"pgbench {c}", v.get("db_backend_states")) for c, v in sorted(
            state.get("pgbench", {}).items(), key=lambda kv: int(kv[0]))]
        for variant, by_clients in state["ingest"].items():
            for c, e in sorted(by_clients.items(), key=lambda kv: int(kv[0])):
                runs.append((f"{variant} {c}", e.get("db_backend_states")))
        for name, w in runs:
            if not w:
                continue
            total = sum(w["counts"].values()) or 1
            top = sorted(w["counts"].items(), key=lambda kv: -kv[1])[:4]
            lines.append(f"  {name:<10} " + ", ".join(f"{k} {v * 100 / total:.0f}%" for k, v in top))
    chk = state.get("ingest_check")
    if chk:
        lines += ["", "Ingest durability check: "
                  f"{chk['hook_200s_incl_warmup']} answers 200 (incl. warm-ups) = "
                  f"{chk['new_deployments']} new deployments (event + job) + {chk['joins']} joins "
                  f"of a queued one - {chk['unanswered_in_flight']} cut off in flight by wrk's stop "
                  f"(bound {chk['in_flight_bound']}): {'consistent' if chk['consistent'] else 'INCONSISTENT'}; "
                  f"longest deployment stream {chk['longest_deployment_stream']} events"]
    print("\n".join(lines))

    result = {
        "facts": facts,
        "settings": state.get("settings", {}),
        "pgbench": state.get("pgbench"),
        "ingest": state.get("ingest"),
        "ingest_check": chk,
        "redeploy": r,
        "noop": n,
        "pickup": p,
        "table": [dict(zip(("figure", "shiplog", "baseline", "ratio", "aim", "verdict"), row)) for row in rows],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True, type=Path)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup")
    p = sub.add_parser("facts")
    p.add_argument("--settings", required=True, help="JSON object")
    p = sub.add_parser("redeploy")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--noop-runs", type=int, default=10)
    p = sub.add_parser("pickup")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--pause-ms", type=float, default=50)
    p = sub.add_parser("spread-setup")
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--batch", type=int, default=4)
    p = sub.add_parser("pgbench")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--logs", nargs="*", default=[])
    p.add_argument("--waits", type=Path)
    p.add_argument("--cpu", type=Path)
    p = sub.add_parser("machine-busy")
    p.add_argument("--seconds", type=float, default=3)
    p = sub.add_parser("cpu-window")
    p.add_argument("--api-pid", required=True)
    p.add_argument("--client-pid", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("wait-sample")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("ingest")
    p.add_argument("--variant", required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--wrk", type=Path, required=True)
    p.add_argument("--warmup", type=Path)
    p.add_argument("--cpu", type=Path)
    p.add_argument("--waits", type=Path)
    sub.add_parser("ingest-mark")
    sub.add_parser("ingest-check")
    p = sub.add_parser("report")
    p.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    state = State(a.state)
    if a.cmd == "facts":
        cmd_facts(state, json.loads(a.settings))
    elif a.cmd == "setup":
        cmd_setup(state)
    elif a.cmd == "redeploy":
        cmd_redeploy(state, a.runs, a.noop_runs)
    elif a.cmd == "pickup":
        cmd_pickup(state, a.runs, a.pause_ms / 1000)
    elif a.cmd == "spread-setup":
        cmd_spread_setup(state, a.keys, a.batch)
    elif a.cmd == "pgbench":
        cmd_pgbench(state, a.clients, a.out, a.logs, a.waits, a.cpu)
    elif a.cmd == "machine-busy":
        print(f"{machine_busy(a.seconds):.3f}")
    elif a.cmd == "cpu-window":
        cmd_cpu_window(state, a.api_pid, a.client_pid, a.seconds, a.out)
    elif a.cmd == "wait-sample":
        cmd_wait_sample(state, a.seconds, a.out)
    elif a.cmd == "ingest":
        cmd_ingest(state, a.variant, a.clients, a.wrk, a.warmup, a.cpu, a.waits)
    elif a.cmd == "ingest-mark":
        cmd_ingest_mark(state)
    elif a.cmd == "ingest-check":
        cmd_ingest_check(state)
    elif a.cmd == "report":
        cmd_report(state, a.out)


if __name__ == "__main__":
    main()
