"""Checks what hookgate delivered with the senders' own libraries, as an app would.

Reads JSON from stdin: a list of {"format", "secret", "headers": {name: value}, "body"},
one per delivery. Prints one line per delivery: "<format> ok" or "<format> refused: <why>".
GitHub and Shopify publish no Python verifier: their checks are the code their
documentation gives ("Validating webhook deliveries"; "Verify a webhook").
"""
import base64, hashlib, hmac, json, sys

import stripe
from standardwebhooks.webhooks import Webhook


def check(delivery):
    fmt, secret, headers, body = delivery["format"], delivery["secret"], delivery["headers"], delivery["body"]
    if fmt == "stripe":
        # What a Django view does: stripe.Webhook.construct_event(payload, sig_header, endpoint_secret),
        # with Stripe's default tolerance of five minutes.
        stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
    elif fmt == "standard-webhooks":
        Webhook(secret).verify(body, headers)
    elif fmt == "github":
        expected = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers["x-hub-signature-256"]):
            raise ValueError("Request signatures didn't match!")
    elif fmt == "shopify":
        digest = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest), headers["x-shopify-hmac-sha256"].encode()):
            raise ValueError("HMAC does not match")
    else:
        raise ValueError(f"unknown format {fmt}")


for delivery in json.load(sys.stdin):
    try:
        check(delivery)
        print(f"{delivery['format']} ok")
    except Exception as error:  # a refusal of any kind is the answer
        print(f"{delivery['format']} refused: {type(error).__name__}: {error}")
