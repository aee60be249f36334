"""Verifies webhook deliveries with the official Standard Webhooks package.

Reads a JSON list of {"secret", "body", "headers"} from the file named on the command line and
prints a JSON list of {"verified", "error"}: `Webhook(secret).verify(body, headers)` as a
tenant's receiver would call it.
"""
import json
import sys

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    for case in cases:
        try:
            payload = Webhook(case["secret"]).verify(case["body"], case["headers"])
            results.append({"verified": True, "type": payload.get("type")})
        except WebhookVerificationError as error:
            results.append({"verified": False, "error": str(error)})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
