"""The official OpenAI Python client drives Gatehouse's Batch API.

Run by `api/tests/it/openai_interop.rs` with the project venv's python (the pinned `openai`
package): `files.create`, `batches.create`, `batches.retrieve` until done, `batches.list`,
`files.content(output_file_id)`; checks every `custom_id` and moderation result, then a
translation batch (Gatehouse's `/v1/translations` endpoint value). Prints one JSON line with
what it saw; exits non-zero on any mismatch.

    python api/tests/openai_batches.py --base-url http://127.0.0.1:PORT/v1 --api-key ghk_...
"""

import argparse
import io
import json
import sys
import time

import openai
from openai.types import ModerationCreateResponse


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def jsonl(lines):
    return io.BytesIO("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode())


def wait(client, batch_id, timeout=150):
    deadline = time.time() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        check(time.time() < deadline, f"batch {batch_id} still {batch.status}")
        time.sleep(0.2)


def output_lines(client, file_id):
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=60)

    inputs = {
        "threat": "I am going to kill you.",
        "insult": "You are so dumb and stupid!",
        "walk": "What a lovely day for a walk.",
        "pair": ["Have a nice day :)", "I am going to kill you."],
    }
    requests = [
        {"custom_id": cid, "method": "POST", "url": "/v1/moderations",
         "body": {"model": "omni-moderation-latest", "input": text}}
        for cid, text in inputs.items()
    ]
    uploaded = client.files.create(file=("requests.jsonl", jsonl(requests)), purpose="batch")
    check(uploaded.purpose == "batch" and uploaded.bytes > 0, f"file: {uploaded}")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/moderations",
        completion_window="24h",
        metadata={"team": "interop"},
    )
    check(batch.status in ("validating", "in_progress", "completed"), f"created: {batch.status}")
    check(batch.metadata == {"team": "interop"}, f"metadata: {batch.metadata}")
    done = wait(client, batch.id)
    check(done.status == "completed", f"status: {done.status} {done.errors}")
    counts = done.request_counts
    check((counts.total, counts.completed, counts.failed) == (4, 4, 0), f"counts: {counts}")
    check(done.output_file_id is not None, "no output file")
    check(any(b.id == batch.id for b in client.batches.list()), "not listed")

    lines = output_lines(client, done.output_file_id)
    by_id = {line["custom_id"]: line for line in lines}
    check(sorted(by_id) == sorted(inputs), f"custom ids: {sorted(by_id)}")
    flagged = {}
    for cid, line in by_id.items():
        check(line["error"] is None, f"{cid}: error {line['error']}")
        check(line["response"]["status_code"] == 200, f"{cid}: {line['response']}")
        body = ModerationCreateResponse.model_validate(line["response"]["body"])
        want = len(inputs[cid]) if isinstance(inputs[cid], list) else 1
        check(len(body.results) == want, f"{cid}: {len(body.results)} results")
        flagged[cid] = [r.flagged for r in body.results]
    check(flagged["threat"] == [True], f"threat: {flagged['threat']}")
    check(flagged["insult"] == [True], f"insult: {flagged['insult']}")
    check(flagged["walk"] == [False], f"walk: {flagged['walk']}")
    check(flagged["pair"] == [False, True], f"pair: {flagged['pair']}")
    errors = output_lines(client, done.error_file_id) if done.error_file_id else []
    check(errors == [], f"error file: {errors}")

    # A translation batch: Gatehouse's endpoint value `/v1/translations`.
    translations = [
        {"custom_id": f"t{i}", "method": "POST", "url": "/v1/translations",
         "body": {"text": text, "source_lang": "zh", "target_lang": "en"}}
        for i, text in enumerate(["我不知道。", "再见！"])
    ]
    uploaded = client.files.create(file=("t.jsonl", jsonl(translations)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/translations", completion_window="24h"
    )
    done = wait(client, batch.id)
    check(done.status == "completed", f"translation status: {done.status} {done.errors}")
    translated = {
        line["custom_id"]: line["response"]["body"]["text"]
        for line in output_lines(client, done.output_file_id)
    }
    check(translated.get("t0") == "I don't know.", f"translations: {translated}")
    check(sorted(translated) == ["t0", "t1"], f"translations: {translated}")

    # A file with a bad line: the batch fails validation, as OpenAI reports it.
    bad = [requests[0], {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}]
    uploaded = client.files.create(file=("bad.jsonl", jsonl(bad)), purpose="batch")
    failed = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/moderations", completion_window="24h"
    )
    check(failed.status == "failed", f"bad file: {failed.status}")
    check(failed.errors is not None and failed.errors.data[0].line == 2, f"errors: {failed.errors}")

    print(json.dumps({"ok": True, "flagged": flagged, "translated": translated}))


if __name__ == "__main__":
    main()
