"""Chaos benchmark (issue 16): the delivery contract under faults, end to end.

Run by loadtest/chaos/run.sh, which sets the environment (own database, queue prefix, ports)
and passes the binaries. This script owns every process it starts:

  1. the api with GATEHOUSE_FAULT_INJECT=api-after-commit: a job submitted with an
     Idempotency-Key is committed, then the api aborts before publishing or answering;
  2. the api again with dispatch-after-publish: its dispatcher publishes that job's chunks,
     then aborts before stamping them released (so they are published twice);
  3. the api for good; the client retries its POST with the same Idempotency-Key and gets the
     committed job back (no second job);
  4. a big job (POST /v1/jobs) and a batch from a file (POST /v1/files + POST /v1/batches),
     while the workers are `kill -9`ed --kills times (each restarted at once), the webhook
     receiver goes down after the first kill and comes back after the third, and — long form,
     by hand only — RabbitMQ and Postgres are restarted with the commands given;
  5. checks: every job completed, every item exactly one succeeded result (0 lost, 0
     duplicate), the jobs' counters, the day's quota usage and the audit records exact, every
     chunk done once, the batch's output file complete; every webhook event delivered, exactly
     one distinct `webhook-id` per event and one job.completed per job.

Prints a table and one JSON line; writes loadtest/results/chaos[-short].json. Exit 1 on any
violation.
"""
import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOUNDARY = "gatehouse-chaos"
TEXTS = ["thanks for the help with my order", "the update broke my login again",
         "what a lovely photo of the harbour", "you are an idiot and a liar",
         "is the store open on sundays?", "今天的天气真好", "这个产品质量很差，退货"]


def log(message):
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


def fail(message):
    log(f"FAILED: {message}")
    sys.exit(1)


# ---- the webhook receiver: goes down and comes back on the same port ----

class Received:
    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries = []  # (webhook-id, type, job id)


RECEIVED = Received()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        payload = json.loads(body)
        with RECEIVED.lock:
            RECEIVED.deliveries.append(
                (self.headers.get("webhook-id"), payload.get("type"), payload.get("data", {}).get("id")))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class Hook:
    def __init__(self, port):
        self.port, self.server = port, None

    def up(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Receiver)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# ---- processes ----

class Proc:
    def __init__(self, name, argv, env, log_dir):
        self.name, self.argv, self.env, self.log_dir = name, argv, env, log_dir
        self.p, self.starts = None, 0

    def start(self, extra_env=None):
        env = dict(self.env, **(extra_env or {}))
        self.starts += 1
        out = open(self.log_dir / f"{self.name}.{self.starts}.log", "wb")
        self.p = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill9(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.p.kill()


def wait_ready(url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            u = urllib.parse.urlsplit(url)
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    fail(f"{url} not ready after {timeout} s")


# ---- the api client ----

class Api:
    def __init__(self, base, key):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.key = u.hostname, u.port, key

    def request(self, method, path, body=None, headers=None, timeout=120):
        h = {"authorization": f"Bearer {self.key}"}
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["content-type"] = "application/json"
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, (json.loads(data) if data else None)
        except ValueError:
            return r.status, data.decode(errors="replace")

    def lines(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=300)
        c.request("GET", path, headers={"authorization": f"Bearer {self.key}"})
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status != 200:
            fail(f"GET {path} answered {r.status}: {data[:300]!r}")
        return [json.loads(line) for line in data.splitlines() if line.strip()]


def psql(sql):
    out = subprocess.run(["psql", os.environ["GATEHOUSE_DATABASE_URL"], "-XAtqc", sql],
                         check=True, capture_output=True, text=True).stdout.strip()
    return out


def items(n, tag):
    rng = random.Random(16)
    return [{"custom_id": f"{tag}-{i}", "text": f"{rng.choice(TEXTS)} #{i}"} for i in range(n)]


def upload_batch_file(api, n):
    lines = "".join(
        json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/moderations",
                    "body": {"input": f"{TEXTS[i % len(TEXTS)]} (batch {i})"}}) + "\n"
        for i in range(n))
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"chaos.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n{lines}\r\n--{BOUNDARY}--\r\n").encode()
    status, file = api.request("POST", "/v1/files", body=body,
                               headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    if status != 200:
        fail(f"upload answered {status}: {file}")
    status, batch = api.request("POST", "/v1/batches", {
        "input_file_id": file["id"], "endpoint": "/v1/moderations", "completion_window": "24h"})
    if status != 200:
        fail(f"batch answered {status}: {batch}")
    return batch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api-bin", required=True)
    ap.add_argument("--worker-bin", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--batch-lines", type=int, default=2_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--hook-port", type=int, default=18599)
    ap.add_argument("--restart-rabbitmq-cmd", default="",
                    help="long form, by hand: a shell command restarting RabbitMQ mid-run")
    ap.add_argument("--restart-postgres-cmd", default="",
                    help="long form, by hand: a shell command restarting Postgres mid-run")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--name", default="chaos")
    args = ap.parse_args()
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    api_url = f"http://{env['GATEHOUSE_API_LISTEN']}"
    started_at = time.time()

    migrated = subprocess.run([args.api_bin, "migrate"], env=env, capture_output=True, text=True)
    if migrated.returncode != 0:
        fail(f"migrate: {migrated.stderr[:3000]}")
    rand = uuid.uuid4().hex[:8]

    def admin(*argv):
        out = subprocess.run([args.api_bin, "admin", *argv], env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    tenant = admin("tenant", "create", "--name", f"chaos {rand}", "--slug", f"chaos-{rand}")["id"]
    admin("tenant", "update", "--tenant", tenant, "--scopes", "moderate,webhooks")
    key = admin("key", "create", "--tenant", tenant, "--name", "chaos", "--scopes", "moderate,webhooks")["key"]
    api = Api(api_url, key)

    apis = Proc("api", [args.api_bin, "serve"], env, log_dir)
    workers = []
    for i in range(args.workers):
        wenv = dict(env, GATEHOUSE_WORKER_LISTEN=f"127.0.0.1:{18591 + i}")
        workers.append(Proc(f"worker{i}", [args.worker_bin], wenv, log_dir))
    hook = Hook(args.hook_port)
    hook.up()
    faults = {}
    try:
        # 1. The api dies between the commit and the publish.
        apis.start({"GATEHOUSE_FAULT_INJECT": "api-after-commit"})
        wait_ready(api_url)
        status, endpoint = api.request("POST", "/v1/webhooks/endpoints", {
            "url": f"http://127.0.0.1:{args.hook_port}/hook",
            "event_types": ["job.completed", "job.failed", "job.progress"]})
        if status != 201:
            fail(f"webhook endpoint: {status} {endpoint}")
        idem = f"chaos-{rand}"
        small = items(300, "small")
        try:
            status, _ = api.request("POST", "/v1/jobs", {"kind": "moderate", "items": small},
                                    headers={"idempotency-key": idem})
            fail(f"the api answered {status} although it should have crashed after the commit")
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
        code = apis.wait_exit(10)
        committed = int(psql("SELECT count(*) FROM jobs"))
        released = int(psql("SELECT count(*) FROM job_chunks WHERE released_at IS NOT NULL"))
        faults["api_after_commit"] = {"exit": code, "jobs_committed": committed, "chunks_released": released}
        if code is None or committed != 1 or released != 0:
            fail(f"api-after-commit: {faults}")
        log(f"api aborted after the commit (exit {code}); 1 job committed, 0 chunks released")

        # 2. Its dispatcher dies between the publish and the stamp.
        apis.start({"GATEHOUSE_FAULT_INJECT": "dispatch-after-publish"})
        code = apis.wait_exit(30)
        faults["dispatch_after_publish"] = {
            "exit": code,
            "chunks_released": int(psql("SELECT count(*) FROM job_chunks WHERE released_at IS NOT NULL"))}
        if code is None:
            fail("dispatch-after-publish did not fire")
        log(f"dispatcher aborted after publishing, before stamping (exit {code})")

        # 3. The api for good; the client's retry finds the committed job.
        apis.start()
        wait_ready(api_url)
        for w in workers:
            w.start()
        for i, _ in enumerate(workers):
            wait_ready(f"http://127.0.0.1:{18591 + i}")
        status, small_job = api.request("POST", "/v1/jobs", {"kind": "moderate", "items": small},
                                        headers={"idempotency-key": idem})
        if status not in (200, 202):
            fail(f"retry of the crashed POST: {status} {small_job}")
        faults["client_retry_status"] = status
        if int(psql("SELECT count(*) FROM jobs")) != 1:
            fail("the retried POST created a second job")

        # 4. The big job and the batch, under kills.
        big = items(args.items, "big")
        status, big_job = api.request("POST", "/v1/jobs", {"kind": "moderate", "items": big})
        if status != 202:
            fail(f"big job: {status} {big_job}")
        batch = upload_batch_file(api, args.batch_lines)
        total = len(small) + args.items + args.batch_lines
        log(f"submitted: {big_job['id']} ({args.items} items), batch {batch['id']} "
            f"({args.batch_lines} lines), {small_job['id']} (300 items)")

        kills, restarts = [], []
        thresholds = [total * (k + 1) // (args.kills + 2) for k in range(args.kills)]
        restart_at = {}
        if args.restart_rabbitmq_cmd:
            restart_at[total * 2 // 5] = ("rabbitmq", args.restart_rabbitmq_cmd)
        if args.restart_postgres_cmd:
            restart_at[total * 3 // 5] = ("postgres", args.restart_postgres_cmd)
        deadline = time.time() + args.timeout
        victim, last_kill_done = 0, -1
        while True:
            try:
                done = int(psql("SELECT count(*) FROM job_results"))
                finished = int(psql(
                    "SELECT count(*) FROM jobs WHERE status IN ('completed','failed','cancelled')"))
            except subprocess.CalledProcessError:
                time.sleep(0.5)  # Postgres restarting
                continue
            # One kill per threshold, each only once work moved on since the last one (so
            # every kill lands on a worker holding deliveries, not on one still starting).
            if thresholds and done >= thresholds[0] and done > last_kill_done:
                thresholds.pop(0)
                last_kill_done = done
                w = workers[victim % len(workers)]
                victim += 1
                w.kill9()
                kills.append({"worker": w.name, "results_at_kill": done})
                log(f"kill -9 {w.name} at {done}/{total} results")
                if len(kills) == 1:
                    hook.down()
                    log("webhook receiver down")
                if len(kills) == 3:
                    hook.up()
                    log("webhook receiver back")
                w.start()
            for at in sorted(restart_at):
                if done >= at:
                    name, cmd = restart_at.pop(at)
                    log(f"restarting {name}: {cmd}")
                    subprocess.run(cmd, shell=True, check=True)
                    restarts.append({"service": name, "results_at_restart": done})
            if finished == 3 and not thresholds:
                break
            if finished == 3 and thresholds:
                # Finished before every kill landed: the remaining kills hit idle workers.
                while thresholds:
                    thresholds.pop(0)
                    w = workers[victim % len(workers)]
                    victim += 1
                    w.kill9()
                    kills.append({"worker": w.name, "results_at_kill": done, "idle": True})
                    w.start()
                if hook.server is None:
                    hook.up()
                break
            if time.time() > deadline:
                fail(f"not finished after {args.timeout} s: {done}/{total} results")
            time.sleep(0.05)
        work_s = time.time() - started_at
        if hook.server is None:
            hook.up()

        # 5. Checks.
        report = check(api, psql, small_job, big_job, batch, total, args)
        # Webhooks: wait until every delivery succeeded (the receiver was down a while).
        wait_until = time.time() + 180
        while True:
            pending = int(psql("SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'"))
            if pending == 0:
                break
            if time.time() > wait_until:
                fail(f"{pending} webhook deliveries not succeeded after 180 s")
            time.sleep(0.5)
        time.sleep(1)
        report["webhooks"] = check_webhooks(psql, [small_job["id"], big_job["id"], report["batch_job_id"]])
        report.update({"kills": kills, "service_restarts": restarts, "faults": faults,
                       "seconds": round(work_s, 1), "items": total,
                       "worker_starts": sum(w.starts for w in workers), "api_starts": apis.starts})
    finally:
        for w in workers:
            w.stop()
        apis.stop()
        hook.down()

    violations = report.pop("violations")
    print_table(report, violations)
    print(json.dumps(dict(report, violations=violations)))
    out = Path(__file__).resolve().parent.parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(dict(report, violations=violations), indent=2))
    if violations:
        fail("; ".join(violations))
    log("every check passed")


def check(api, psql, small_job, big_job, batch, total, args):
    violations = []
    status, batch = api.request("GET", f"/v1/batches/{batch['id']}")
    jobs = {}
    for name, job in [("small", small_job), ("big", big_job)]:
        _, jobs[name] = api.request("GET", f"/v1/jobs/{job['id']}")
    expect = {"small": 300, "big": args.items}
    for name, job in jobs.items():
        if job["status"] != "completed" or job["counts"] != {
                "total": expect[name], "succeeded": expect[name], "failed": 0, "cancelled": 0}:
            violations.append(f"{name} job: {job['status']} {job['counts']}")
    # Results through the api: every index exactly once, succeeded.
    lost = duplicate = 0
    for name, job in jobs.items():
        lines = api.lines(f"/v1/jobs/{job['id']}/results")
        seen = {}
        for line in lines:
            seen[line["index"]] = seen.get(line["index"], 0) + 1
            if line["status"] != "succeeded":
                violations.append(f"{name} item {line['index']}: {line['status']}")
        lost += sum(1 for i in range(expect[name]) if i not in seen)
        duplicate += sum(n - 1 for n in seen.values())
    if batch["status"] != "completed" or batch["request_counts"] != {
            "total": args.batch_lines, "completed": args.batch_lines, "failed": 0}:
        violations.append(f"batch: {batch['status']} {batch['request_counts']}")
    output = api.lines(f"/v1/files/{batch['output_file_id']}/content")
    ids = [line["custom_id"] for line in output]
    lost += args.batch_lines - len(set(ids))
    duplicate += len(ids) - len(set(ids))
    db = {
        "results": int(psql("SELECT count(*) FROM job_results")),
        "results_succeeded": int(psql("SELECT count(*) FROM job_results WHERE status = 'succeeded'")),
        "job_counters_succeeded": int(psql("SELECT sum(succeeded) FROM jobs")),
        "chunks": int(psql("SELECT count(*) FROM job_chunks")),
        "chunks_done": int(psql("SELECT count(*) FROM job_chunks WHERE status = 'done'")),
        "audit_chunk_processed": int(psql(
            "SELECT count(*) FROM audit_events WHERE action = 'job.chunk.processed'")),
        "audit_job_created": int(psql("SELECT count(*) FROM audit_events WHERE action = 'job.created' AND NOT coalesce((details->>'idempotent_replay')::boolean, false)")),
        "jobs": int(psql("SELECT count(*) FROM jobs")),
        "quota_items": int(psql("SELECT coalesce(sum(items), 0) FROM quota_usage")),
        "quota_failed_items": int(psql("SELECT coalesce(sum(failed_items), 0) FROM quota_usage")),
        "max_chunk_attempts": int(psql("SELECT max(attempts) FROM job_chunks")),
        "redelivered_chunks": int(psql("SELECT count(*) FROM job_chunks WHERE attempts > 1")),
    }
    for field, want in [("results", total), ("results_succeeded", total),
                        ("job_counters_succeeded", total), ("chunks_done", db["chunks"]),
                        ("audit_chunk_processed", db["chunks"]), ("audit_job_created", 3),
                        ("jobs", 3), ("quota_items", total), ("quota_failed_items", 0)]:
        if db[field] != want:
            violations.append(f"{field} = {db[field]}, expected {want}")
    if lost or duplicate:
        violations.append(f"{lost} lost, {duplicate} duplicate")
    batch_job_id = psql("SELECT 'job_' || replace(job_id::text, '-', '') FROM jobs "
                        f"WHERE job_id NOT IN ('{uuid_of(small_job['id'])}', '{uuid_of(big_job['id'])}')")
    return {"complete_percent": round(100.0 * db["results_succeeded"] / total, 2), "lost": lost,
            "duplicate": duplicate, "db": db, "batch_job_id": batch_job_id, "violations": violations}


def uuid_of(public_id):
    raw = public_id.split("_", 1)[1]
    return str(uuid.UUID(raw)) if len(raw) == 32 else raw


def check_webhooks(psql, job_ids):
    with RECEIVED.lock:
        deliveries = list(RECEIVED.deliveries)
    messages = int(psql("SELECT count(*) FROM webhook_messages"))
    by_id = {}
    for webhook_id, kind, job in deliveries:
        by_id.setdefault(webhook_id, set()).add((kind, job))
    completed = {}
    for webhook_id, events in by_id.items():
        for kind, job in events:
            if kind == "job.completed":
                completed.setdefault(job, set()).add(webhook_id)
    result = {
        "events": messages,
        "received": len(deliveries),
        "distinct_webhook_ids": len(by_id),
        "redelivered_same_id": len(deliveries) - len(by_id),
        "attempts": int(psql("SELECT count(*) FROM webhook_attempts")),
        "failed_attempts": int(psql(
            "SELECT count(*) FROM webhook_attempts WHERE status_code IS NULL OR status_code >= 300")),
        "completed_per_job": {job: len(ids) for job, ids in completed.items()},
    }
    problems = []
    if len(by_id) != messages:
        problems.append(f"{len(by_id)} distinct webhook-ids received, {messages} events recorded")
    if any(len(events) != 1 for events in by_id.values()):
        problems.append("a webhook-id carried two different events")
    for job in job_ids:
        if len(completed.get(job, ())) != 1:
            problems.append(f"{job}: {len(completed.get(job, ()))} job.completed events")
    result["problems"] = problems
    return result


def print_table(report, violations):
    db, wh = report["db"], report["webhooks"]
    rows = [
        ("items (3 jobs: retried-after-crash, big, batch)", report["items"]),
        ("complete", f"{report['complete_percent']} %"),
        ("lost / duplicate results", f"{report['lost']} / {report['duplicate']}"),
        ("worker kill -9 / worker starts", f"{len(report['kills'])} / {report['worker_starts']}"),
        ("api aborts (after commit, after publish)", f"{report['api_starts'] - 1}"),
        ("service restarts", ", ".join(r["service"] for r in report["service_restarts"]) or "none"),
        ("chunks done / audit job.chunk.processed", f"{db['chunks_done']} / {db['audit_chunk_processed']}"),
        ("chunks redelivered (attempts > 1), max attempts", f"{db['redelivered_chunks']}, {db['max_chunk_attempts']}"),
        ("job counters succeeded / results", f"{db['job_counters_succeeded']} / {db['results']}"),
        ("quota usage items / failed", f"{db['quota_items']} / {db['quota_failed_items']}"),
        ("webhook events / distinct webhook-ids received", f"{wh['events']} / {wh['distinct_webhook_ids']}"),
        ("webhook attempts (failed while down)", f"{wh['attempts']} ({wh['failed_attempts']})"),
        ("same webhook-id received twice", wh["redelivered_same_id"]),
        ("seconds (submit → all done)", report["seconds"]),
        ("violations", len(violations) + len(wh["problems"])),
    ]
    for name, value in rows:
        print(f"{name:<52}{value}")
    violations.extend(wh["problems"])


if __name__ == "__main__":
    main()
