#!/usr/bin/env python3
"""Shiplog fault suite: real PostgreSQL, real Docker engine, several shiplog-worker processes.

Driven by scripts/faults (which builds the binaries, prepares the PostgreSQL cluster on port
5433 and cleans up on exit). Python 3.11 standard library only. See docs/faults.md.

Every number in the table is computed from the database (events table, deployments read
model, apalis jobs) and from the API and the Docker engine, never from this script's own
bookkeeping: the script only remembers which requests were answered 200 and when it
injected each fault.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL_STATUSES = {"success", "failure", "error", "inactive"}
TERMINAL_EVENTS = ("DeploymentSucceeded", "DeploymentFailed", "DeploymentSuperseded")
REQUEST_EVENTS = (
    "DeployRequested",
    "RedeployRequested",
    "UpgradeRequested",
    "RollbackRequested",
    "RestartRequested",
    "StopRequested",
    "RemoveRequested",
)
PG_VERSION = "15"
PG_CLUSTER = "shiplogfaults"
PG_PORT = 5433
PG_BASE = f"postgres://shiplog:shiplog@127.0.0.1:{PG_PORT}"
MAIN_REGISTRY = "127.0.0.1:5000"
WEB_V1 = f"{MAIN_REGISTRY}/shiplog-test/web:v1"
REGISTRY_BINARY = "/usr/bin/docker-registry"

# "503 within 2 s": the measured latency includes this client's own overhead.
LATENCY_SLACK = 0.1

HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class SetupError(Exception):
    """The harness could not set a scenario up: not a finding about Shiplog."""


class Interrupted(BaseException):
    pass


# --------------------------------------------------------------------------------------
# small helpers: subprocesses, SQL, HTTP, Docker
# --------------------------------------------------------------------------------------


def run(cmd: list[str], timeout: float = 60, check: bool = True, **kw) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise SetupError(f"{' '.join(cmd[:4])}… timed out after {timeout}s") from e
    if check and r.returncode != 0:
        raise SetupError(f"{' '.join(cmd[:6])} failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return r


def psql(url: str, sql: str, timeout: float = 30, check: bool = True) -> str:
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    env.pop("DATABASE_URL", None)
    r = run(["psql", url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            timeout=timeout, check=check, env=env)
    return r.stdout.strip()


def sql_rows(url: str, query: str, timeout: float = 30) -> list[dict]:
    out = psql(url, f"SELECT coalesce(json_agg(t), '[]'::json) FROM ({query}) t", timeout)
    return json.loads(out or "[]")


@dataclass
class Reply:
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    body: object
    headers: dict
    latency: float
    error: str | None = None


def http(method: str, url: str, headers: dict | None = None, body: object | None = None,
         timeout: float = 10) -> Reply:
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    t0 = time.monotonic()
    try:
        with HTTP.open(req, timeout=timeout) as resp:
            raw = resp.read()
            status, rh = resp.status, dict(resp.headers.items())
    except urllib.error.HTTPError as e:
        raw = e.read() if e.fp else b""
        status, rh = e.code, dict(e.headers.items()) if e.headers else {}
    except (urllib.error.URLError, OSError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        return Reply(None, None, {}, time.monotonic() - t0, f"{type(reason).__name__}: {reason}")
    latency = time.monotonic() - t0
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return Reply(status, parsed, {k.lower(): v for k, v in rh.items()}, latency)


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    return run(["docker", *args], timeout=timeout, check=check).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}s"


def p50_max(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{fmt_s(statistics.median(values))} / {fmt_s(max(values))}"


# --------------------------------------------------------------------------------------
# the suite: run-wide state, written to a state file so `--cleanup` can undo everything
# --------------------------------------------------------------------------------------


class Suite:
    def __init__(self, run_dir: Path, bin_dir: Path, quick: bool, seed: int):
        self.run_dir = run_dir
        self.bin_dir = bin_dir
        self.quick = quick
        self.rng = random.Random(seed)
        self.seed = seed
        self.run_id = secrets.token_hex(3)
        self.prefix = f"fx{self.run_id}"  # every stack, database, image of this run
        self.procs: list[subprocess.Popen] = []
        self.state_lock = threading.Lock()
        self.state = {
            "prefix": self.prefix,
            "bin_dir": str(bin_dir),
            "pids": [],
            "databases": [],
            "registry": None,  # {"pid", "dir", "port"}
            "pg_stopped": False,
            "images": [],
        }
        self.save_state()

    def save_state(self) -> None:
        with self.state_lock:
            tmp = self.run_dir / "state.json.tmp"
            tmp.write_text(json.dumps(self.state, indent=1))
            tmp.replace(self.run_dir / "state.json")

    def spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        logf = open(self.run_dir / f"{name}.log", "ab")
        p = subprocess.Popen(argv, env=env, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        logf.close()
        self.procs.append(p)
        with self.state_lock:
            self.state["pids"].append(p.pid)
        self.save_state()
        return p

    def kill(self, p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)
        with self.state_lock:
            if p.pid in self.state["pids"]:
                self.state["pids"].remove(p.pid)
        self.save_state()

    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.setdefault("RUST_LOG", "info,sqlx=warn")
        env["SHIPLOG_LOG_JSON"] = "true"
        env["NO_COLOR"] = "1"
        return env

    # PostgreSQL cluster on 5433 -------------------------------------------------------
    def pg_stop(self) -> None:
        self.state["pg_stopped"] = True
        self.save_state()
        run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop", "-m", "fast"], timeout=60)

    def pg_start(self) -> None:
        run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"], timeout=60, check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT)], check=False).returncode == 0:
                self.state["pg_stopped"] = False
                self.save_state()
                return
            time.sleep(0.1)
        raise SetupError("PostgreSQL 5433 did not come back within 60 s")

    def create_database(self, name: str) -> str:
        psql(f"{PG_BASE}/postgres", f"CREATE DATABASE {name}")
        self.state["databases"].append(name)
        self.save_state()
        return f"{PG_BASE}/{name}"

    def drop_database(self, name: str) -> None:
        psql(f"{PG_BASE}/postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)
        if name in self.state["databases"]:
            self.state["databases"].remove(name)
        self.save_state()


def cleanup_from_state(state_file: Path) -> None:
    """Undo everything a run left: processes, containers, networks, images, databases,
    the private registry; restart the 5433 cluster if a scenario had stopped it."""
    try:
        st = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    bin_dir = st.get("bin_dir", "")
    for pid in st.get("pids", []):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if bin_dir and exe.startswith(bin_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    reg = st.get("registry")
    if reg and reg.get("pid"):
        try:
            if "docker-registry" in Path(f"/proc/{reg['pid']}/cmdline").read_text(errors="replace"):
                os.kill(reg["pid"], signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    prefix = st.get("prefix", "")
    if prefix.startswith("fx") and len(prefix) > 3:
        r = subprocess.run(["docker", "ps", "-a", "--format",
                            '{{.ID}} {{.Names}} {{.Label "com.docker.compose.project"}}'],
                           capture_output=True, text=True, timeout=60)
        ids = [ln.split()[0] for ln in r.stdout.splitlines()
               if any(part.startswith(prefix) for part in ln.split()[1:])]
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=120)
        r = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"],
                           capture_output=True, text=True, timeout=60)
        nets = [n for n in r.stdout.split() if n.startswith(prefix)]
        if nets:
            subprocess.run(["docker", "network", "rm", *nets], capture_output=True, timeout=60)
        r = subprocess.run(["docker", "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}"],
                           capture_output=True, text=True, timeout=60)
        imgs = sorted({ln.split()[0] for ln in r.stdout.splitlines()
                       if len(ln.split()) > 1 and f"/{prefix}/" in ln.split()[1]})
        imgs += [i for i in st.get("images", []) if i not in imgs]
        if imgs:
            subprocess.run(["docker", "rmi", "-f", *imgs], capture_output=True, timeout=120)
    if st.get("pg_stopped"):
        subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"], capture_output=True, timeout=60)
        for _ in range(100):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT)]).returncode == 0:
                break
            time.sleep(0.1)
    for db in st.get("databases", []):
        subprocess.run(["psql", f"{PG_BASE}/postgres", "-X", "-q", "-c",
                        f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"],
                       capture_output=True, timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="5"))
    if reg and reg.get("dir"):
        shutil.rmtree(reg["dir"], ignore_errors=True)
    st.update(pids=[], databases=[], registry=None, pg_stopped=False, images=[])
    state_file.write_text(json.dumps(st, indent=1))


# --------------------------------------------------------------------------------------
# one Shiplog installation per scenario: its own database, API, workers, stacks, key
# --------------------------------------------------------------------------------------


def manifest(stack: str, image: str, version: str = "1.0.0") -> str:
    return (f"name: {stack}\nx-shiplog:\n  version: {version}\n  variables: {{}}\n"
            f"services:\n  web:\n    image: {image}\n    ports: [\"127.0.0.1::8080\"]\n")


@dataclass
class Worker:
    proc: subprocess.Popen
    name: str
    log: Path
    started_at: float


@dataclass
class Accepted:
    """A hook request answered 200."""
    deployment: str
    stack: str
    sent_at: float
    tag: str = ""


class Env:
    def __init__(self, suite: Suite, scenario: str, stacks: dict[str, str], workers: int,
                 worker_env: dict | None = None):
        self.suite = suite
        self.scenario = scenario
        self.db_name = f"{suite.prefix}_{scenario}"
        self.stacks = stacks  # stack -> image
        self.n_workers = workers
        self.worker_env = worker_env or {}
        self.workers: list[Worker] = []
        self.dead_workers: list[Worker] = []
        self.worker_seq = 0
        self.api: subprocess.Popen | None = None
        self.token = secrets.token_hex(16)
        self.port = 0
        self.key = ""
        self.url = ""
        self.catalog = suite.run_dir / f"catalog-{scenario}"
        self.accepted: list[Accepted] = []
        self.acc_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self.url = self.suite.create_database(self.db_name)
        self.catalog.mkdir(parents=True, exist_ok=True)
        for stack, image in self.stacks.items():
            (self.catalog / f"{stack}.yml").write_text(manifest(stack, image))
        self.start_api()
        r = self.admin("POST", "/api/environments",
                       {"id": "local", "name": "local", "dockerEndpoint": "unix:///var/run/docker.sock"})
        if r.status != 201:
            raise SetupError(f"register environment: {r.status} {r.body}")
        r = self.admin("POST", "/api/keys", {"name": f"faults-{self.scenario}",
                                             "permissions": ["Hooks.Redeploy", "Hooks.Upgrade"],
                                             "environmentId": "local"})
        if r.status != 201:
            raise SetupError(f"create key: {r.status} {r.body}")
        self.key = r.body["key"]
        for _ in range(self.n_workers):
            self.start_worker()
        ids = []
        for stack in self.stacks:
            r = self.admin("POST", "/api/environments/local/stacks", {"stackName": stack, "version": "1.0.0"})
            if r.status != 202:
                raise SetupError(f"install {stack}: {r.status} {r.body}")
            ids.append(r.body["deploymentId"])
        ends = self.wait_terminal(ids, 180)
        bad = {i: s for i, s in ends.items() if s != "success"}
        if bad:
            raise SetupError(f"installs did not succeed: {bad}")

    def start_api(self) -> None:
        self.port = free_port()
        env = self.suite.base_env()
        env.update(DATABASE_URL=self.url, SHIPLOG_LISTEN=f"127.0.0.1:{self.port}",
                   SHIPLOG_METRICS_LISTEN="127.0.0.1:0",
                   SHIPLOG_ADMIN_TOKEN=self.token, SHIPLOG_CATALOG_DIR=str(self.catalog))
        self.api = self.suite.spawn(f"{self.scenario}-api", [str(self.suite.bin_dir / "shiplog-api")], env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise SetupError(f"shiplog-api exited with {self.api.returncode}; see {self.scenario}-api.log")
            if http("GET", f"{self.base}/health", timeout=2).status == 200:
                return
            time.sleep(0.1)
        raise SetupError("shiplog-api did not answer /health within 60 s")

    def start_worker(self) -> Worker:
        self.worker_seq += 1
        env = self.suite.base_env()
        # Several workers on one host: each takes a free metrics port.
        env.update(DATABASE_URL=self.url, SHIPLOG_METRICS_LISTEN="127.0.0.1:0")
        env.setdefault("SHIPLOG_PULL_TIMEOUT", "60")
        env.setdefault("SHIPLOG_DEPLOYMENT_TIMEOUT", "300")
        env.update(self.worker_env)
        name = f"{self.scenario}-worker{self.worker_seq}"
        logp = self.suite.run_dir / f"{name}.log"
        proc = self.suite.spawn(name, [str(self.suite.bin_dir / "shiplog-worker")], env)
        wname = self._worker_name(proc, logp)
        w = Worker(proc, wname, logp, time.time())
        self.workers.append(w)
        return w

    @staticmethod
    def _worker_name(proc: subprocess.Popen, logp: Path) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SetupError(f"shiplog-worker exited with {proc.returncode}; see {logp.name}")
            try:
                for line in logp.read_text(errors="replace").splitlines():
                    if "shiplog-worker started" in line:
                        try:
                            return json.loads(line)["fields"]["worker"]
                        except (ValueError, KeyError):
                            m = re.search(r"worker[=\"]+:?\"?([\w.-]+)", line)
                            if m:
                                return m.group(1)
            except OSError:
                pass
            time.sleep(0.05)
        raise SetupError(f"shiplog-worker did not log its name within 60 s ({logp.name})")

    def kill_worker(self, w: Worker) -> None:
        self.suite.kill(w.proc, signal.SIGKILL)
        self.workers.remove(w)
        self.dead_workers.append(w)

    def stop(self) -> None:
        """Kill this scenario's processes, keep a copy of its event log, remove its
        containers and database."""
        for w in list(self.workers):
            self.suite.kill(w.proc, signal.SIGKILL)
        self.workers.clear()
        if self.api:
            self.suite.kill(self.api, signal.SIGTERM)
        try:
            rows = sql_rows(self.url, "SELECT global_position, stream_id, stream_version, event_type, data,"
                                      " metadata, recorded_at FROM events ORDER BY global_position", 60)
            with open(self.suite.run_dir / f"{self.scenario}-events.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
        except SetupError as e:
            log(f"could not save the event log of {self.scenario}: {e}")
        dumps = {
            "jobs": "SELECT convert_from(job, 'UTF8') AS job, id, status, attempts, max_attempts, run_at, "
                    "last_result, lock_at, lock_by, done_at FROM apalis.jobs ORDER BY run_at",
            "workers": "SELECT * FROM apalis.workers ORDER BY last_seen",
            "leases": "SELECT * FROM stack_leases ORDER BY stack_key",
            "deployments": "SELECT * FROM deployments ORDER BY created_at",
        }
        for name, q in dumps.items():
            try:
                (self.suite.run_dir / f"{self.scenario}-{name}.json").write_text(
                    json.dumps(sql_rows(self.url, q, 60), indent=1))
            except SetupError as e:
                log(f"could not save {name} of {self.scenario}: {e}")
        remove_stack_containers(list(self.stacks))
        self.suite.drop_database(self.db_name)

    # -- HTTP ----------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, body: object = None, timeout: float = 30) -> Reply:
        return http(method, self.base + path, {"Authorization": f"Bearer {self.token}"}, body, timeout)

    def redeploy(self, stack: str, timeout: float = 10, idem: str | None = None, tag: str = "") -> Reply:
        headers = {"X-Api-Key": self.key}
        if idem:
            headers["Idempotency-Key"] = idem
        sent = time.time()
        r = http("POST", self.base + "/api/hooks/redeploy", headers, {"stackName": stack, "force": True}, timeout)
        if r.status == 200 and isinstance(r.body, dict) and r.body.get("deploymentId"):
            with self.acc_lock:
                self.accepted.append(Accepted(r.body["deploymentId"], stack, sent, tag))
        return r

    def deployment(self, dep: str) -> Reply:
        return self.admin("GET", f"/api/deployments/{dep}", timeout=10)

    # -- database views ------------------------------------------------------------------
    def statuses(self, ids: list[str]) -> dict[str, str]:
        if not ids:
            return {}
        arr = ",".join(f"'{i}'" for i in set(ids))
        rows = sql_rows(self.url, f"SELECT id::text AS id, status FROM deployments WHERE id IN ({arr})")
        return {r["id"]: r["status"] for r in rows}

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, str]:
        """Polls the read model until every id is terminal or the timeout passes (a
        database error counts as 'not yet')."""
        deadline = time.monotonic() + timeout
        st: dict[str, str] = {}
        while True:
            try:
                st = self.statuses(ids)
            except SetupError:
                pass
            if all(st.get(i) in TERMINAL_STATUSES for i in ids) or time.monotonic() >= deadline:
                return st
            time.sleep(0.5)

    def streams(self, stacks: list[str] | None = None) -> list[dict]:
        """Per deployment stream: stack, first DeploymentStarted, first terminal event,
        number of terminal events, the worker of each attempt (all times epoch s)."""
        cond = ""
        if stacks:
            cond = "WHERE r.stack IN (" + ",".join(f"'{s}'" for s in stacks) + ")"
        q = f"""
          WITH r AS (
            SELECT stream_id, data->>'stack' AS stack, event_type AS kind,
                   extract(epoch FROM recorded_at)::float8 AS requested
            FROM events WHERE stream_version = 1 AND stream_id LIKE 'deployment-%'),
          e AS (
            SELECT stream_id,
              min(extract(epoch FROM recorded_at)::float8) FILTER (WHERE event_type = 'DeploymentStarted') AS started,
              min(extract(epoch FROM recorded_at)::float8) FILTER (WHERE event_type IN {TERMINAL_EVENTS}) AS ended,
              count(*) FILTER (WHERE event_type IN {TERMINAL_EVENTS}) AS terminals,
              count(*) FILTER (WHERE event_type = 'DeploymentStarted') AS attempts,
              count(*) FILTER (WHERE event_type = 'RedeployJoined') AS joined,
              json_agg(json_build_object('type', event_type, 'at', extract(epoch FROM recorded_at)::float8,
                                         'worker', metadata->>'worker', 'data', data)
                       ORDER BY stream_version) AS events
            FROM events WHERE stream_id LIKE 'deployment-%' GROUP BY stream_id)
          SELECT substr(r.stream_id, 12) AS id, r.stack, r.kind, r.requested, e.started, e.ended,
                 e.terminals, e.attempts, e.joined, e.events
          FROM r JOIN e USING (stream_id) {cond}"""
        return sql_rows(self.url, q, 60)

    def jobs_for(self, ids: list[str]) -> dict[str, dict]:
        rows = sql_rows(self.url, "SELECT convert_from(job, 'UTF8') AS job, status, attempts, max_attempts,"
                                  " lock_by, last_result::text AS last_result FROM apalis.jobs")
        out = {}
        wanted = set(ids)
        for r in rows:
            try:
                dep = json.loads(r["job"]).get("deployment")
            except ValueError:
                continue
            if dep in wanted:
                out[dep] = r
        return out


def remove_stack_containers(stacks: list[str]) -> None:
    ids = []
    for s in stacks:
        out = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={s}", check=False)
        ids += out.split()
    if ids:
        docker("rm", "-f", "-v", *ids, timeout=120, check=False)
    for s in stacks:
        docker("network", "rm", f"{s}_default", check=False)


def stack_containers(stack: str) -> list[dict]:
    out = docker("ps", "-a", "--no-trunc", "--filter", f"label=com.docker.compose.project={stack}", "--format",
                 '{{.ID}}|{{.Names}}|{{.State}}|{{.Status}}|{{.Label "com.docker.compose.service"}}|'
                 '{{.Label "io.shiplog.deployment"}}', check=False)
    res = []
    for ln in out.splitlines():
        p = ln.split("|")
        if len(p) >= 6:
            res.append({"id": p[0], "name": p[1], "state": p[2], "status": p[3], "service": p[4],
                        "deployment": p[5]})
    return res


# --------------------------------------------------------------------------------------
# the verdict: lost / doubled / stuck, from the database, the API and Docker
# --------------------------------------------------------------------------------------


@dataclass
class Verdict:
    requested: int = 0
    terminal: int = 0
    lost: int = 0
    doubled: int = 0
    stuck: int = 0
    distinct: int = 0
    statuses: dict = field(default_factory=dict)
    details: list = field(default_factory=list)
    streams: list = field(default_factory=list)


def finding(kind: str, deployment: str | None, at: float | None, text: str) -> dict:
    return {"kind": kind, "deployment": deployment, "at": at, "text": text}


def judge(env: Env, accepted: list[Accepted], wait_s: float) -> Verdict:
    """Waits (bounded) for every accepted deployment to end, then classifies each accepted
    request and checks the stacks for doubled work."""
    v = Verdict(requested=len(accepted))
    ids = sorted({a.deployment for a in accepted})
    v.distinct = len(ids)
    env.wait_terminal(ids, wait_s)
    # The API's word on each deployment (lost = unknown to the API or absent from the log).
    api_status: dict[str, str | None] = {}
    for dep in ids:
        r = env.deployment(dep)
        if r.status == 200 and isinstance(r.body, dict):
            api_status[dep] = r.body.get("status")
        elif r.status == 404:
            api_status[dep] = None
        else:
            api_status[dep] = f"?{r.status}"
    streams = env.streams(list(env.stacks))
    v.streams = streams
    by_id = {s["id"]: s for s in streams}
    not_terminal = [d for d in ids if api_status.get(d) not in TERMINAL_STATUSES]
    jobs = env.jobs_for(not_terminal) if not_terminal else {}
    verdict_of: dict[str, str] = {}
    for dep in ids:
        st = api_status.get(dep)
        if st is None or dep not in by_id:
            verdict_of[dep] = "lost"
            v.details.append(finding("lost", dep, None, f"LOST {dep}: API {'404' if st is None else st}, "
                                     f"{'no' if dep not in by_id else 'has'} event stream"))
        elif st in TERMINAL_STATUSES:
            verdict_of[dep] = "terminal"
        elif not by_id[dep]["started"] and (dep not in jobs or jobs[dep]["status"] in ("Done", "Killed") or (
                jobs[dep]["status"] == "Failed" and jobs[dep]["attempts"] >= jobs[dep]["max_attempts"])):
            verdict_of[dep] = "lost"
            j = jobs.get(dep)
            v.details.append(finding("lost", dep, None, f"LOST {dep}: status {st}, never started, queue job "
                                     + (f"{j['status']} after {j['attempts']} attempts, last_result "
                                        f"{(j['last_result'] or '')[:200]}" if j else "missing")))
        else:
            verdict_of[dep] = "stuck"
            j = jobs.get(dep)
            last = [e["type"] for e in by_id[dep]["events"]][-3:]
            v.details.append(finding("stuck", dep, by_id[dep]["started"], f"STUCK {dep} ({by_id[dep]['stack']}): status {st}, last events {last}, job "
                             + (f"{j['status']} attempts {j['attempts']}/{j['max_attempts']} lock_by {j['lock_by']}"
                                f" last_result {(j['last_result'] or '')[:200]}" if j else "missing")))
        v.statuses[st] = v.statuses.get(st, 0) + 1
    for a in accepted:
        k = verdict_of[a.deployment]
        if k == "terminal":
            v.terminal += 1
        elif k == "lost":
            v.lost += 1
        else:
            v.stuck += 1
    v.statuses = {str(k): n for k, n in sorted(v.statuses.items(), key=lambda x: str(x[0]))}
    # doubled (a): more than one terminal event in one deployment stream
    for s in streams:
        if s["terminals"] > 1:
            v.doubled += 1
            kinds = [e["type"] for e in s["events"] if e["type"] in TERMINAL_EVENTS]
            v.details.append(finding("doubled", s["id"], s["started"], f"DOUBLED {s['id']} ({s['stack']}): {s['terminals']} terminal events {kinds}"))
    # doubled (b): overlapping [first DeploymentStarted, terminal] windows within a stack
    now = time.time()
    per_stack: dict[str, list] = {}
    for s in streams:
        if s["started"]:
            per_stack.setdefault(s["stack"], []).append((s["started"], s["ended"] or now, s["id"]))
    for stack, wins in per_stack.items():
        wins.sort()
        reach_end, reach_id = None, None
        for start, end, dep in wins:
            if reach_end is not None and start < reach_end - 1e-6:
                v.doubled += 1
                v.details.append(finding("doubled", dep, start, f"DOUBLED overlap on {stack}: {dep} started {reach_end - start:.3f}s before "
                                         f"{reach_id} ended"))
            if reach_end is None or end > reach_end:
                reach_end, reach_id = end, dep
    # doubled (c): more than one running container per service, (d) any *-old container
    for stack in env.stacks:
        cs = stack_containers(stack)
        running: dict[str, list] = {}
        for c in cs:
            if c["state"] == "running":
                running.setdefault(c["service"], []).append(c["name"])
            if c["name"].endswith("-old"):
                v.doubled += 1
                v.details.append(finding("doubled", None, None, f"DOUBLED leftover {c['name']} ({c['state']}) in {stack}"))
        for svc, names in running.items():
            if len(names) > 1:
                v.doubled += 1
                v.details.append(finding("doubled", None, None, f"DOUBLED {len(names)} running containers for {stack}/{svc}: {names}"))
    return v


# --------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    runs: int = 0
    requested: int = 0
    terminal: int = 0
    lost: int = 0
    doubled: int = 0
    stuck: int = 0
    recovery: str = "-"
    violations: int = 0
    notes: list = field(default_factory=list)
    error: str | None = None

    def absorb(self, v: Verdict) -> None:
        self.requested += v.requested
        self.terminal += v.terminal
        self.lost += v.lost
        self.doubled += v.doubled
        self.stuck += v.stuck
        self.notes.append(f"{v.distinct} distinct deployments; end statuses (per deployment) {v.statuses}")
        self.notes.extend(d["text"] for d in v.details[:40])
        if len(v.details) > 40:
            self.notes.append(f"… {len(v.details) - 40} more findings in results.json")


def stack_names(suite: Suite, tag: str, n: int) -> list[str]:
    return [f"{suite.prefix}{tag}s{i}" for i in range(n)]


def kill_phase(env: Env, dep: str, worker: str, stack: str) -> str:
    """Where the killed attempt was, from the events it managed to record and what the
    Docker engine shows right after the kill."""
    try:
        evs = sql_rows(env.url, f"SELECT event_type, metadata->>'worker' AS worker FROM events "
                                f"WHERE stream_id = 'deployment-{dep}' ORDER BY stream_version")
    except SetupError:
        return "unknown"
    types = [e["event_type"] for e in evs]
    mine = [e["event_type"] for e in evs if e["worker"] == worker]
    if any(t in TERMINAL_EVENTS for t in types):
        return "after the end"
    if "ContainerReplaced" in mine:
        return "before the success event"
    if "ImagePulled" not in mine:
        return "before/during the pull"
    cs = stack_containers(stack)
    old = [c for c in cs if c["name"].endswith("-old")]
    new = [c for c in cs if c["deployment"] == dep and not c["name"].endswith("-old")]
    if not old:
        return "after the pull, before the stop" if not new else "after the old container was removed"
    if not new:
        return "between stop and start"
    if new[0]["state"] != "running":
        return "between create and start"
    if "(healthy)" in new[0]["status"]:
        return "healthy, before the replaced event"
    return "waiting for health"


def scenario_kills(suite: Suite) -> list[Row]:
    rounds = 8 if suite.quick else 50
    row = Row("1 worker SIGKILL")
    stacks = stack_names(suite, "k", 4)
    env = Env(suite, "kills", {s: WEB_V1 for s in stacks}, workers=3)
    try:
        env.start()
        rng = suite.rng
        phases: dict[str, int] = {}
        recov_terminal: list[float] = []
        recov_takeover: list[float] = []
        kills = []
        for rnd in range(rounds):
            target = rng.choice(stacks)
            other = rng.choice([s for s in stacks if s != target])
            r = env.redeploy(target, tag=f"round{rnd}")
            if r.status != 200:
                row.notes.append(f"round {rnd}: redeploy answered {r.status} {r.body}")
                continue
            dep = r.body["deploymentId"]
            round_ids = [dep]
            r2 = env.redeploy(other, tag=f"round{rnd}")
            if r2.status == 200:
                round_ids.append(r2.body["deploymentId"])
            queued_behind = rng.random() < 0.3
            # wait for the target to start; note its worker
            deadline = time.monotonic() + 60
            wname = None
            while time.monotonic() < deadline:
                d = env.deployment(dep)
                if d.status == 200 and d.body.get("worker") and d.body.get("status") == "in_progress":
                    wname = d.body["worker"]
                    break
                if d.status == 200 and d.body.get("status") in TERMINAL_STATUSES:
                    break
                time.sleep(0.02)
            if queued_behind:
                r3 = env.redeploy(target, tag=f"round{rnd}-behind")
                if r3.status == 200:
                    round_ids.append(r3.body["deploymentId"])
            victim = next((w for w in env.workers if w.name == wname), None)
            if victim is None:
                row.notes.append(f"round {rnd}: {dep} ended or was not seen in progress before the kill; no kill")
                env.wait_terminal(round_ids, 120)
                continue
            x = rng.random()
            delay = (rng.uniform(0, 0.05) if x < 0.2 else rng.uniform(0.05, 0.35) if x < 0.4
                     else rng.uniform(0.35, 1.6) if x < 0.8 else rng.uniform(1.6, 2.6))
            time.sleep(delay)
            # Everything the victim holds at the moment of the kill.
            try:
                held = [r["id"] for r in sql_rows(env.url, f"SELECT id::text AS id FROM deployments WHERE "
                                                           f"status = 'in_progress' AND worker = '{victim.name}'")]
            except SetupError:
                held = []
            t_kill = time.time()
            env.kill_worker(victim)
            phase = kill_phase(env, dep, victim.name, target)
            phases[phase] = phases.get(phase, 0) + 1
            env.start_worker()  # three stay alive
            ends = env.wait_terminal(round_ids + held, 180)
            streams = {s["id"]: s for s in env.streams()}
            victims = set(held) | ({dep} if phase != "after the end" else set())
            for vdep in victims:
                s = streams.get(vdep)
                if not s:
                    continue
                if s["ended"] and s["ended"] >= t_kill:
                    recov_terminal.append(s["ended"] - t_kill)
                takeovers = [e["at"] for e in s["events"] if e["type"] == "DeploymentStarted"
                             and e["at"] >= t_kill and e["worker"] != victim.name]
                if takeovers:
                    recov_takeover.append(min(takeovers) - t_kill)
            kills.append({"round": rnd, "deployment": dep, "worker": victim.name, "delay": round(delay, 3),
                          "phase": phase, "held": held, "ends": ends})
            log(f"kills: round {rnd + 1}/{rounds}: killed {victim.name[-8:]} {delay:.2f}s in ({phase}); "
                f"ends {sorted(set(ends.values()))}")
        row.runs = len(kills)
        v = judge(env, env.accepted, 180)
        row.absorb(v)
        row.recovery = p50_max(recov_terminal)
        row.notes.insert(0, f"kills by phase: {phases}")
        row.notes.insert(1, f"recovery = kill -> terminal event of the killed deployment "
                            f"({len(recov_terminal)} victims); kill -> next DeploymentStarted by another worker: "
                            f"p50/max {p50_max(recov_takeover)}")
        (suite.run_dir / "kills.json").write_text(json.dumps(kills, indent=1))
    finally:
        env.stop()
    return [row]


def scenario_pg(suite: Suite) -> list[Row]:
    outages = [5, 20] if suite.quick else [5, 60]
    stacks = stack_names(suite, "p", 5)
    env = Env(suite, "pg", {s: WEB_V1 for s in stacks}, workers=3)
    rows = []
    try:
        env.start()
        results: list[dict] = []
        res_lock = threading.Lock()
        stop_load = threading.Event()
        threads: list[threading.Thread] = []

        def one(i: int) -> None:
            stack = stacks[i % len(stacks)]
            sent = time.time()
            r = env.redeploy(stack, timeout=10, tag="load")
            with res_lock:
                results.append({"sent": sent, "stack": stack, "status": r.status, "latency": r.latency,
                                "retry_after": r.headers.get("retry-after"), "error": r.error,
                                "deployment": (r.body or {}).get("deploymentId") if isinstance(r.body, dict) else None,
                                "message": (r.body or {}).get("message") if isinstance(r.body, dict) else str(r.body)[:200]})

        def load() -> None:
            i = 0
            nxt = time.monotonic()
            while not stop_load.is_set():
                t = threading.Thread(target=one, args=(i,), daemon=True)
                t.start()
                threads.append(t)
                i += 1
                nxt += 0.2
                stop_load.wait(max(0.0, nxt - time.monotonic()))

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        marks = []
        try:
            time.sleep(8)
            for d in outages:
                t_stop_cmd = time.time()
                suite.pg_stop()
                t_down = time.time()
                log(f"pg: PostgreSQL 5433 stopped (took {t_down - t_stop_cmd:.1f}s); down for {d}s")
                time.sleep(d)
                t_up_cmd = time.time()
                suite.pg_start()
                t_up = time.time()
                log(f"pg: PostgreSQL 5433 back (start took {t_up - t_up_cmd:.1f}s)")
                marks.append({"outage": d, "stop_cmd": t_stop_cmd, "down": t_down, "up_cmd": t_up_cmd, "up": t_up})
                time.sleep(25)
        finally:
            stop_load.set()
            loader.join(timeout=10)
            for t in threads:
                t.join(timeout=15)
        with res_lock:
            res = sorted(results, key=lambda x: x["sent"])
        (suite.run_dir / "pg-requests.json").write_text(json.dumps(res, indent=1))
        accepted_all = list(env.accepted)
        v = judge(env, accepted_all, 120 if suite.quick else 300)
        # Per outage row: the requests of its window [previous end, this end of post-period).
        streams = {s["id"]: s for s in v.streams}
        for k, m in enumerate(marks):
            lo = marks[k - 1]["up"] + 25 if k else 0
            hi = m["up"] + 25 if k + 1 < len(marks) else float("inf")
            window = [x for x in res if lo <= x["sent"] < hi]
            row = Row(f"2 PostgreSQL down {m['outage']}s", runs=1)
            during = [x for x in window if m["down"] <= x["sent"] and x["sent"] + x["latency"] <= m["up_cmd"]]
            viol = []
            for x in during:
                if x["status"] != 503:
                    viol.append(f"while down: {x['status'] or x['error']} after {x['latency']:.2f}s")
                elif x["latency"] > 2.0 + LATENCY_SLACK:
                    viol.append(f"while down: 503 after {x['latency']:.2f}s (> 2 s)")
                elif not x["retry_after"]:
                    viol.append("while down: 503 without Retry-After")
            for x in window:
                if x["status"] == 500:
                    viol.append(f"500 at {x['sent'] - m['down']:+.1f}s from the stop: {x['message']}")
                elif x["status"] is None and not (m["down"] <= x["sent"] <= m["up_cmd"]):
                    viol.append(f"no answer at {x['sent'] - m['down']:+.1f}s from the stop: {x['error']}")
            row.violations = len(viol)
            codes: dict[str, int] = {}
            for x in window:
                codes[str(x["status"] or "none")] = codes.get(str(x["status"] or "none"), 0) + 1
            acc_ids = {x["deployment"] for x in window if x["status"] == 200 and x["deployment"]}
            acc = [a for a in accepted_all if a.deployment in acc_ids and lo <= a.sent_at < hi]
            row.requested = len(acc)
            kinds = {d["deployment"]: d for d in v.details if d["kind"] in ("lost", "stuck")}
            for a in acc:
                k2 = kinds.get(a.deployment)
                if not k2:
                    row.terminal += 1
                elif k2["kind"] == "lost":
                    row.lost += 1
                else:
                    row.stuck += 1
            for d in {a.deployment for a in acc}:
                if d in kinds:
                    row.notes.append(kinds[d]["text"])
            # doubled findings: attributed to the row whose window their start falls in
            for d in v.details:
                if d["kind"] == "doubled":
                    t = d["at"]
                    if (t is not None and lo <= t < hi) or (t is None and k == len(marks) - 1):
                        row.doubled += 1
                        row.notes.append(d["text"])
            first200 = [x["sent"] + x["latency"] for x in window if x["sent"] >= m["up"] and x["status"] == 200]
            api_rec = (min(first200) - m["up"]) if first200 else None
            # backlog: accepted before the database came back, not ended at the stop
            backlog = [a.deployment for a in accepted_all if a.sent_at < m["up"] and lo <= a.sent_at]
            backlog = [d for d in set(backlog) if streams.get(d) and
                       (not streams[d]["ended"] or streams[d]["ended"] > m["stop_cmd"])]
            ends = [streams[d]["ended"] for d in backlog if streams[d]["ended"]]
            backlog_rec = (max(ends) - m["up"]) if ends and len(ends) == len(backlog) else None
            backlog_txt = fmt_s(backlog_rec) if backlog_rec is not None or not backlog else \
                f"never ({len(backlog) - len(ends)}/{len(backlog)} not terminal)"
            first_worker = [e["at"] for s in v.streams for e in s["events"] if e["at"] >= m["up"]
                            and e["worker"]]
            worker_rec = (min(first_worker) - m["up"]) if first_worker else None
            row.recovery = f"api {fmt_s(api_rec)}, backlog {fmt_s(backlog_rec) if backlog_rec is not None or not backlog else 'never'}"
            lat_down = [x["latency"] for x in during]
            row.notes.append(f"answers in its window: {codes}; while down {len(during)} requests, latency p50/max "
                             f"{p50_max(lat_down)}; stop took {m['down'] - m['stop_cmd']:.1f}s, start "
                             f"{m['up'] - m['up_cmd']:.1f}s")
            row.notes.append(f"recovery: DB back -> first 200 {fmt_s(api_rec)}; -> first worker event "
                             f"{fmt_s(worker_rec)}; -> backlog of {len(backlog)} deployments all terminal "
                             f"{backlog_txt}")
            groups: dict[str, list[str]] = {}
            for x in viol:
                groups.setdefault(re.sub(r"[-+]?[\d.]+s", "#s", x), []).append(x)
            for xs in groups.values():
                row.notes.append(f"VIOLATION {xs[0]} (x{len(xs)})")
            rows.append(row)
        if rows:
            rows[-1].notes.append(f"whole scenario: {v.distinct} distinct deployments; end statuses {v.statuses}")
    finally:
        env.stop()
    return rows


class PrivateRegistry:
    """A docker-registry of the fault suite's own on a free loopback port, so stopping it
    never disturbs other users of 127.0.0.1:5000."""

    def __init__(self, suite: Suite):
        self.suite = suite
        self.port = free_port()
        self.dir = suite.run_dir / "registry"
        self.proc: subprocess.Popen | None = None
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n"
            f"  filesystem:\n    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        logf = open(self.suite.run_dir / "registry.log", "ab")
        self.proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(self.config)], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        self.suite.state["registry"] = {"pid": self.proc.pid, "dir": str(self.dir), "port": self.port}
        self.suite.save_state()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if http("GET", f"http://{self.addr}/v2/", timeout=2).status == 200:
                return
            if self.proc.poll() is not None:
                raise SetupError("private registry exited; see registry.log")
            time.sleep(0.1)
        raise SetupError("private registry not answering within 20 s")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


def build_fresh_image(suite: Suite, ref: str, pad_mb: int) -> None:
    """A new image (own random layer of pad_mb MB) pushed as ref, then removed locally so
    the next deployment really pulls it."""
    dockerfile = (f"FROM {WEB_V1}\nRUN dd if=/dev/urandom of=/pad bs=1048576 count={pad_mb} 2>/dev/null\n"
                  f"LABEL io.shiplog.faults={secrets.token_hex(4)}\n")
    r = subprocess.run(["docker", "build", "-q", "-t", ref, "-"], input=dockerfile, capture_output=True,
                       text=True, timeout=180, env=dict(os.environ, DOCKER_BUILDKIT="0"))
    if r.returncode != 0:
        raise SetupError(f"docker build {ref}: {r.stderr.strip()[:300]}")
    suite.state["images"].append(ref)
    suite.save_state()
    docker("push", ref, timeout=180)
    docker("rmi", ref, timeout=60)


CAUSE = re.compile(r"registry|pull|127\.0\.0\.1:\d+|refused|connect|EOF|reset|unreachable|timed? ?out|manifest|"
                   r"blob|layer", re.I)


REGISTRY_MODES = {
    # name: (kill the registry before the deployments start?, outage seconds)
    "down before the pull": (True, 15),
    "killed mid-pull, back in 12s": (False, 12),
    "killed mid-pull, back in 40s": (False, 40),
}


def pulled_by(env: Env, ids: list[str]) -> set[str]:
    """Deployments that recorded an ImagePulled (so they may be replacing containers)."""
    if not ids:
        return set()
    arr = ",".join(f"'deployment-{i}'" for i in ids)
    try:
        rows = sql_rows(env.url, f"SELECT DISTINCT substr(stream_id, 12) AS id FROM events "
                                 f"WHERE event_type = 'ImagePulled' AND stream_id IN ({arr})")
    except SetupError:
        return set(ids)  # cannot tell: do not accuse
    return {r["id"] for r in rows}


def scenario_registry(suite: Suite) -> list[Row]:
    modes = list(REGISTRY_MODES)
    plan = [modes[0], modes[2]] if suite.quick else modes * 3
    pad_mb = 48
    row = Row("3 registry killed mid-pull")
    reg = PrivateRegistry(suite)
    stacks = stack_names(suite, "r", 3)
    images = {s: f"{reg.addr}/{suite.prefix}/{s}:live" for s in stacks}
    # A pull timeout shorter than the outage, so "registry gone mid-pull" ends within the
    # scenario's bounds (the engine itself retries a broken layer download for ~50 s).
    env = Env(suite, "registry", images, workers=3, worker_env={"SHIPLOG_PULL_TIMEOUT": "20"})
    try:
        docker("pull", "-q", WEB_V1, timeout=120)
        reg.start()
        for s in stacks:
            build_fresh_image(suite, images[s], pad_mb)
        env.start()
        recov: list[float] = []
        recov_by_mode: dict[str, list[float]] = {}
        outcomes: dict[str, dict[str, int]] = {}
        messages: dict[str, int] = {}
        viol: list[str] = []
        for rn, mode in enumerate(plan):
            before_start, down_s = REGISTRY_MODES[mode]
            for s in stacks:
                build_fresh_image(suite, images[s], pad_mb)
            before = {s: [c["id"] for c in stack_containers(s) if c["state"] == "running"] for s in stacks}
            t_stop = None
            if before_start:
                t_stop = time.time()
                reg.kill()
            ids = {}
            for s in stacks:
                r = env.redeploy(s, tag=f"run{rn}")
                if r.status == 200:
                    ids[s] = r.body["deploymentId"]
                else:
                    row.notes.append(f"run {rn}: redeploy of {s} answered {r.status} {r.body}")
            if not before_start:
                # kill the registry shortly after the first deployment starts: pulls under way
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    st = env.statuses(list(ids.values()))
                    if any(x != "queued" for x in st.values()):
                        break
                    time.sleep(0.02)
                time.sleep(suite.rng.uniform(0.05, 0.4))
                t_stop = time.time()
                reg.kill()
            assert t_stop is not None
            # a service whose deployment has not got its image must keep its container up
            down_until = time.monotonic() + down_s
            while time.monotonic() < down_until:
                pulled = pulled_by(env, list(ids.values()))
                for s in stacks:
                    if ids.get(s) in pulled:
                        continue  # replacing now: a short gap is the normal stop/start
                    up = [c for c in stack_containers(s) if c["state"] == "running"]
                    if not up:
                        viol.append(f"run {rn} ({mode}): no running container of {s} while its image was "
                                    f"not pulled yet, {time.time() - t_stop:.1f}s into the outage")
                time.sleep(0.5)
            reg.start()
            ends = env.wait_terminal(list(ids.values()), 180)
            streams = {x["id"]: x for x in env.streams(stacks)}
            for s, dep in ids.items():
                status = ends.get(dep)
                outcomes.setdefault(mode, {})
                outcomes[mode][str(status)] = outcomes[mode].get(str(status), 0) + 1
                sdep = streams.get(dep)
                if sdep and sdep["ended"]:
                    recov.append(sdep["ended"] - t_stop)
                    recov_by_mode.setdefault(mode, []).append(sdep["ended"] - t_stop)
                d = env.deployment(dep)
                msg = (d.body or {}).get("message") if isinstance(d.body, dict) else None
                if status in ("error", "failure"):
                    key = re.sub(r"sha256:[0-9a-f]+|[0-9a-f]{12,}|fx[0-9a-f]{6}\w*|:\d{4,5}", "…", msg or "")
                    messages[f"{status}: {key}"] = messages.get(f"{status}: {key}", 0) + 1
                    if not msg or not CAUSE.search(msg):
                        viol.append(f"run {rn}: {dep} ended {status} with a message naming no cause: {msg!r}")
                    now_up = [c["id"] for c in stack_containers(s) if c["state"] == "running"]
                    if now_up != before[s]:
                        viol.append(f"run {rn}: {s}: {status} but the running container changed "
                                    f"({[x[:12] for x in before[s]]} -> {[x[:12] for x in now_up]})")
                # the stack must serve after all (one running, healthy container)
                up = [c for c in stack_containers(s) if c["state"] == "running"]
                if len(up) != 1 or "unhealthy" in up[0]["status"]:
                    viol.append(f"run {rn}: {s} ends with {len(up)} running containers "
                                f"{[c['status'] for c in up]}")
            log(f"registry: run {rn + 1}/{len(plan)} ({mode}): outcomes "
                f"{sorted((ends.get(d) or '?') for d in ids.values())}")
            row.runs += 1
        v = judge(env, env.accepted, 180)
        row.absorb(v)
        row.recovery = p50_max(recov)
        row.violations = len(viol)
        row.notes.insert(0, f"recovery = registry kill -> terminal event; {pad_mb} MB fresh layer per image; "
                            f"outcomes by mode {outcomes}; recovery p50/max by mode "
                            f"{ {m: p50_max(x) for m, x in recov_by_mode.items()} }")
        for m, n in sorted(messages.items()):
            row.notes.insert(1, f"message x{n}: {m[:300]}")
        row.notes.extend("VIOLATION " + x for x in viol[:30])
    finally:
        env.stop()
        reg.kill()
        for ref in suite.state["images"]:
            docker("rmi", "-f", ref, check=False)
    return [row]


def scenario_burst(suite: Suite) -> list[Row]:
    total = 60 if suite.quick else 200
    row = Row("4 concurrent redeploys", runs=1)
    stacks = stack_names(suite, "c", 10)
    env = Env(suite, "burst", {s: WEB_V1 for s in stacks}, workers=4)
    try:
        env.start()
        order = [stacks[i % len(stacks)] for i in range(total)]
        suite.rng.shuffle(order)
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=40) as pool:
            replies = list(pool.map(lambda s: env.redeploy(s, timeout=30, tag="burst"), order))
        codes: dict[str, int] = {}
        for r in replies:
            codes[str(r.status)] = codes.get(str(r.status), 0) + 1
        v = judge(env, env.accepted, 300 if suite.quick else 600)
        row.absorb(v)
        ends = [s["ended"] for s in v.streams if s["ended"] and s["kind"] == "RedeployRequested"]
        workers = {e["worker"] for s in v.streams for e in s["events"] if e["type"] == "DeploymentStarted"}
        joined = sum(s["joined"] for s in v.streams)
        row.notes.insert(0, f"{total} requests: answers {codes}; {joined} joined a queued deployment; "
                            f"{len(workers)} workers ran deployments; last terminal "
                            f"{(max(ends) - t0) if ends else 0:.1f}s after the first request")
        row.violations = sum(n for c, n in codes.items() if c != "200")
    finally:
        env.stop()
    return [row]


def scenario_idempotency(suite: Suite) -> list[Row]:
    runs = 3 if suite.quick else 10
    row = Row("5 Idempotency-Key x10")
    stacks = stack_names(suite, "i", 2)
    env = Env(suite, "idem", {s: WEB_V1 for s in stacks}, workers=2)
    try:
        env.start()
        viol = []
        for rn in range(runs):
            stack = stacks[rn % len(stacks)]
            key = f"faults-{suite.prefix}-{rn}-{secrets.token_hex(4)}"
            t0 = time.time()
            first = env.redeploy(stack, idem=key, tag=f"idem{rn}")
            replies = [first]
            # 4 at once while it is queued, 4 while it runs, 1 after it ended
            with ThreadPoolExecutor(max_workers=4) as pool:
                replies += list(pool.map(lambda _: env.redeploy(stack, idem=key, tag=f"idem{rn}"), range(4)))
            dep = first.body.get("deploymentId") if first.status == 200 else None
            if dep:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and env.statuses([dep]).get(dep) == "queued":
                    time.sleep(0.05)
            for _ in range(4):
                replies.append(env.redeploy(stack, idem=key, tag=f"idem{rn}"))
            if dep:
                env.wait_terminal([dep], 120)
            replies.append(env.redeploy(stack, idem=key, tag=f"idem{rn}"))
            ids = {r.body.get("deploymentId") for r in replies if r.status == 200}
            codes = sorted(str(r.status) for r in replies)
            created = sql_rows(env.url, f"SELECT count(*) AS n FROM events WHERE stream_version = 1 AND "
                                        f"stream_id LIKE 'deployment-%' AND data->>'stack' = '{stack}' AND "
                                        f"recorded_at >= to_timestamp({t0 - 0.5})")[0]["n"]
            extra = max(len(ids), created) - 1
            if extra > 0:
                row.doubled += extra
                row.notes.append(f"DOUBLED run {rn}: 10 requests with Idempotency-Key {key} -> {len(ids)} ids, "
                                 f"{created} deployments created: {sorted(ids)}")
            if any(r.status != 200 for r in replies):
                viol.append(f"run {rn}: answers {codes}")
            row.runs += 1
        v = judge(env, env.accepted, 180)
        row.absorb(v)
        row.violations = len(viol)
        row.notes.extend("VIOLATION " + x for x in viol)
    finally:
        env.stop()
    return [row]


SCENARIOS = {
    "1": scenario_kills,
    "2": scenario_pg,
    "3": scenario_registry,
    "4": scenario_burst,
    "5": scenario_idempotency,
}


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = ["scenario", "runs", "deployments requested", "terminal", "lost", "doubled", "stuck",
            "recovery p50 / max", "violations"]
    body = [[r.scenario, str(r.runs), str(r.requested), str(r.terminal), str(r.lost), str(r.doubled),
             str(r.stuck), r.recovery, str(r.violations)] if not r.error else
            [r.scenario, str(r.runs), "-", "-", "-", "-", "-", "-", "HARNESS ERROR"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="1,2,3,4,5")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--cleanup", action="store_true", help="undo what the run in --run-dir left, then exit")
    a = ap.parse_args()
    run_dir = Path(a.run_dir)
    if a.cleanup:
        cleanup_from_state(run_dir / "state.json")
        return 0

    def on_signal(signum, _frame):
        raise Interrupted(f"signal {signum}")

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    seed = a.seed if a.seed is not None else secrets.randbits(32)
    suite = Suite(run_dir, Path(a.bin_dir), a.quick, seed)
    log(f"run {suite.prefix} ({'quick' if a.quick else 'full'}), seed {seed}, logs in {run_dir}")
    rows: list[Row] = []
    started = time.time()
    try:
        for key in [k.strip() for k in a.only.split(",") if k.strip()]:
            fn = SCENARIOS[key]
            t0 = time.time()
            log(f"scenario {key}: {fn.__name__}")
            try:
                got = fn(suite)
            except SetupError as e:
                got = [Row(f"{key} {fn.__name__}", error=str(e))]
                log(f"scenario {key}: HARNESS ERROR: {e}")
            except Exception as e:  # noqa: BLE001 — report and carry on with the next one
                got = [Row(f"{key} {fn.__name__}", error=f"{type(e).__name__}: {e}")]
                log(f"scenario {key}: HARNESS ERROR:\n{traceback.format_exc()}")
            for r in got:
                r.notes.append(f"scenario wall time {time.time() - t0:.0f}s")
            rows += got
            print("\n" + table(got) + "\n", file=sys.stderr, flush=True)
    except Interrupted as e:
        log(f"interrupted ({e}); cleaning up")
        rows.append(Row("interrupted", error=str(e)))
    finally:
        for p in suite.procs:
            if p.poll() is None:
                p.kill()
        cleanup_from_state(run_dir / "state.json")
    report = [f"Shiplog fault suite, {'quick' if a.quick else 'full'} run {suite.prefix}, seed {seed}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {time.time() - started:.0f}s", "", table(rows), ""]
    for r in rows:
        report.append(f"{r.scenario}:")
        if r.error:
            report.append(f"  HARNESS ERROR: {r.error}")
        for n in r.notes:
            report.append(f"  - {n}")
    text = "\n".join(report)
    (run_dir / "report.txt").write_text(text + "\n")
    (run_dir / "results.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1, default=str))
    print(text)
    if any(r.error for r in rows):
        return 3
    if any(r.lost or r.doubled or r.stuck for r in rows):
        return 1
    if any(r.violations for r in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
