"""Webhook delivery lag on an idle system (run by loadtest/webhooks.sh).

Registers an endpoint pointing at a receiver started here on 127.0.0.1, then submits one-item
moderation jobs one at a time; for each, waits for its `job.completed` webhook. Lag = arrival
at the receiver − the job's `completed_at` (the commit of the completion statement that
records the event; same machine, same clock). Every delivery is verified afterwards with the
official `standardwebhooks` package. Prints a table and one JSON line; writes
loadtest/results/webhooks.json.
"""
import argparse
import json
import os
import statistics
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks import Webhook

ARRIVED = {}
LOCK = threading.Condition()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        at = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        payload = json.loads(body)
        with LOCK:
            ARRIVED.setdefault(payload["data"]["id"], (at, body, dict(self.headers)))
            LOCK.notify_all()

    def log_message(self, *args):
        pass


def call(api, key, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    key = os.environ["GATEHOUSE_KEY"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    endpoint = call(args.api, key, "POST", "/v1/webhooks/endpoints",
                    {"url": url, "event_types": ["job.completed"]})
    secret = endpoint["secret"]

    lags, end_to_end, verified = [], [], 0
    for i in range(args.warmup + args.jobs):
        sent = time.time()
        job = call(args.api, key, "POST", "/v1/jobs",
                   {"kind": "moderate", "items": [{"text": f"Have a nice day, number {i}!"}]})
        with LOCK:
            if not LOCK.wait_for(lambda: job["id"] in ARRIVED, timeout=30):
                raise SystemExit(f"no webhook for {job['id']} within 30 s")
            at, body, headers = ARRIVED[job["id"]]
        payload = json.loads(body)
        Webhook(secret).verify(body.decode(), headers)
        verified += 1
        if i < args.warmup:
            continue
        lags.append(at - parse_time(payload["data"]["completed_at"]))
        end_to_end.append(at - sent)
    server.shutdown()

    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    summary = {
        "jobs": args.jobs,
        "verified": verified,
        "lag_ms": {"p50": ms(pct(lags, 50)), "p90": ms(pct(lags, 90)), "p99": ms(pct(lags, 99)),
                   "max": ms(max(lags)), "mean": ms(statistics.mean(lags))},
        "submit_to_webhook_ms": {"p50": ms(pct(end_to_end, 50)), "p99": ms(pct(end_to_end, 99))},
    }
    print(f"{'measure':<36}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    lag = summary["lag_ms"]
    print(f"{'completed_at -> webhook arrived (ms)':<36}{lag['p50']:>8}{lag['p90']:>8}{lag['p99']:>8}{lag['max']:>8}")
    e2e = summary["submit_to_webhook_ms"]
    print(f"{'POST /v1/jobs -> webhook (ms)':<36}{e2e['p50']:>8}{'':>8}{e2e['p99']:>8}")
    print(json.dumps(summary))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "webhooks.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
