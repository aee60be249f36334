"""The official OpenAI Python client against a running Gatehouse.

Run by `api/tests/it/openai_interop.rs` with the project venv's python (scripts/python-env.sh
installs the pinned `openai` package). Calls `client.moderations.create(...)` and checks the
parsed, typed response; prints one JSON line with what it saw; exits non-zero on any mismatch.

    python api/tests/openai_interop.py --base-url http://127.0.0.1:PORT/v1 --api-key ghk_...
"""

import argparse
import json
import sys

import openai

OPENAI_CATEGORIES = [
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
    "sexual/minors", "violence", "violence/graphic",
]


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=60)

    inputs = [
        "I am going to kill you.",
        "你这个傻逼，滚！",
        "What a lovely day for a walk.",
    ]
    response = client.moderations.create(model="omni-moderation-latest", input=inputs)
    check(isinstance(response, openai.types.ModerationCreateResponse), "response type")
    check(response.id.startswith("job_"), f"id {response.id!r}")
    check(response.model.startswith("guard-e5-small@"), f"model {response.model!r}")
    check(len(response.results) == 3, "three results")

    seen = []
    for text, result in zip(inputs, response.results):
        check(isinstance(result, openai.types.Moderation), "result type")
        check(isinstance(result.flagged, bool), "flagged is a bool")
        dumped = result.categories.model_dump(by_alias=True)
        scores = result.category_scores.model_dump(by_alias=True)
        for name in OPENAI_CATEGORIES:
            check(isinstance(dumped.get(name), bool), f"categories[{name!r}] is a bool")
            check(isinstance(scores.get(name), float), f"category_scores[{name!r}] is a float")
        # Gatehouse's extras survive as extra fields on the parsed model.
        extra = result.model_extra or {}
        check(extra.get("level") in ("safe", "controversial", "unsafe"), f"level {extra.get('level')!r}")
        check(isinstance(extra.get("gatehouse"), dict), "gatehouse result")
        seen.append({
            "text": text,
            "flagged": result.flagged,
            "level": extra["level"],
            "violence": result.categories.violence,
            "harassment": result.categories.harassment,
            "categories": extra["gatehouse"]["categories"],
        })

    check(response.results[0].flagged and response.results[0].categories.violence, "threat → violence")
    check(response.results[1].flagged and response.results[1].categories.harassment, "insult → harassment")
    check(not response.results[2].flagged, "ordinary text not flagged")

    single = client.moderations.create(input="Thanks for your help!")
    check(len(single.results) == 1 and not single.results[0].flagged, "single string input")

    # Errors come back as the client's typed exceptions.
    try:
        client.moderations.create(input=[])
        check(False, "empty input accepted")
    except openai.UnprocessableEntityError as e:
        check(e.status_code == 422, "422 for empty input")
    bad = openai.OpenAI(base_url=args.base_url, api_key="ghk_wrong_key", max_retries=0)
    try:
        bad.moderations.create(input="hi")
        check(False, "bad key accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "401 for a bad key")

    print(json.dumps({"ok": True, "openai": openai.__version__, "results": seen}, ensure_ascii=False))


if __name__ == "__main__":
    main()
