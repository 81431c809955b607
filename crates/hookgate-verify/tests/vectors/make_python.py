"""Makes python.json: signatures computed by the senders' own Python libraries.

    pip install stripe==16.1.0 standardwebhooks slack_sdk twilio
    python3 make_python.py > python.json

Each vector is checked with the same library's verifier before it is written.
Shopify and Acuity publish no verifier library; their vectors use Python's
standard hmac module, independent of hookgate's code.
"""
import base64, hashlib, hmac, json, datetime
from importlib.metadata import version

vectors = []

# Stripe
import stripe
secret, ts = "whsec_test_vector_secret", 1700000000
payload = '{"id":"evt_1Pvec","object":"event","type":"customer.updated"}'
sig = stripe.WebhookSignature._compute_signature(f"{ts}.{payload}", secret)
header = f"t={ts},v1={sig}"
assert stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
vectors.append(dict(scheme="stripe", made_with=f"stripe {version('stripe')}", secret=secret,
                    headers={"Stripe-Signature": header}, body=payload, now=ts))

# Standard Webhooks
from standardwebhooks.webhooks import Webhook
secret = "whsec_" + base64.b64encode(b"standard-webhooks-vector-secret!").decode()
msg_id, ts = "msg_2vEC7oRs", 1700000100
payload = '{"type":"invoice.paid","data":{"id":"inv_1"}}'
wh = Webhook(secret)
sig = wh.sign(msg_id, datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc), payload)
headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
vectors.append(dict(scheme="standard-webhooks", made_with=f"standardwebhooks {version('standardwebhooks')}",
                    secret=secret, headers=headers, body=payload, now=ts))

# Standard Webhooks v1a: Ed25519, signed with the `cryptography` package
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
public = private.public_key().public_bytes_raw()
msg_id, ts = "msg_2vEC7oRsA", 1700000150
payload = '{"type":"invoice.voided","data":{"id":"inv_2"}}'
signature = base64.b64encode(private.sign(f"{msg_id}.{ts}.{payload}".encode())).decode()
headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"v1a,{signature}"}
vectors.append(dict(scheme="standard-webhooks", made_with=f"cryptography {version('cryptography')} Ed25519 (v1a)",
                    secret="whpk_" + base64.b64encode(public).decode(), headers=headers, body=payload, now=ts))

# Slack: the documented example, and one made with slack_sdk
from slack_sdk.signature import SignatureVerifier
doc_secret, doc_ts = "8f742231b10e8888abcd99yyyzzz85a5", 1531420618
doc_body = ("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
doc_sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
verifier = SignatureVerifier(doc_secret, clock=type("C", (), {"now": lambda self: doc_ts})())
assert verifier.is_valid(doc_body, str(doc_ts), doc_sig)
vectors.append(dict(scheme="slack", made_with="Slack's documented example, checked with slack_sdk", secret=doc_secret,
                    headers={"X-Slack-Request-Timestamp": str(doc_ts), "X-Slack-Signature": doc_sig},
                    body=doc_body, now=doc_ts))
secret, ts = "slack_vector_signing_secret", 1700000200
payload = '{"type":"event_callback","event_id":"Ev01","event":{"type":"message"}}'
sig = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=payload)
vectors.append(dict(scheme="slack", made_with=f"slack_sdk {version('slack_sdk')}", secret=secret,
                    headers={"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig}, body=payload, now=ts))

# Twilio: a form body, and a JSON body (bodySHA256 in the URL)
from twilio.request_validator import RequestValidator
token = "twilio_vector_auth_token"
rv = RequestValidator(token)
url = "https://hooks.example.com/in/twilio"
params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
          "From": "+12349013030", "To": "+18005551212"}
from urllib.parse import urlencode
body = urlencode(params)
sig = rv.compute_signature(url, params)
assert rv.validate(url, params, sig)
vectors.append(dict(scheme="twilio", made_with=f"twilio {version('twilio')}", secret=token, public_url=url,
                    headers={"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"},
                    body=body, now=0))
json_body = '{"MessageSid":"SM1","Body":"hello"}'
body_hash = hashlib.sha256(json_body.encode()).hexdigest()
json_url = f"{url}?bodySHA256={body_hash}"
sig = rv.compute_signature(json_url, {})
assert rv.validate(json_url, json_body, sig)
vectors.append(dict(scheme="twilio", made_with=f"twilio {version('twilio')} (JSON body)", secret=token,
                    public_url=url, query=f"bodySHA256={body_hash}",
                    headers={"X-Twilio-Signature": sig, "Content-Type": "application/json"}, body=json_body, now=0))

# Shopify and Acuity: Python's hmac (no official verifier library)
secret = "shopify_vector_client_secret"
payload = '{"id":820982911946154508,"email":"jon@example.com"}'
sig = base64.b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()).decode()
vectors.append(dict(scheme="shopify", made_with="python hmac", secret=secret,
                    headers={"X-Shopify-Hmac-Sha256": sig}, body=payload, now=0))
key = "acuity_vector_api_key"
payload = "action=appointment.rescheduled&id=1234&calendarID=5&appointmentTypeID=6"
sig = base64.b64encode(hmac.new(key.encode(), payload.encode(), hashlib.sha256).digest()).decode()
vectors.append(dict(scheme="acuity", made_with="python hmac", secret=key,
                    headers={"X-Acuity-Signature": sig}, body=payload, now=0))

print(json.dumps(vectors, indent=2))
