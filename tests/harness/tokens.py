"""A local JWT issuer for the gateway's `jwt_authn` filter: an RSA key pair made at start, its
JWKS file, and RS256 tokens signed with it (or with another key, for the tests of bad ones).
Nothing leaves the machine; every Stack gets its own issuer, so a stray key can do no harm."""

import base64
import json
import time
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://issuer.sluice.test"
AUDIENCE = "sluice-gateway"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def number(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Issuer:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:12]

    def jwks(self) -> dict:
        public = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                          "n": number(public.n), "e": number(public.e)}]}

    def token(self, claims=None, *, ttl_s=300, key=None, issuer=ISSUER, audience=AUDIENCE) -> str:
        """An RS256 token; `key`: sign with another private key (a forged token)."""
        now = int(time.time())
        payload = {"iss": issuer, "aud": audience, "iat": now, "exp": now + ttl_s, **(claims or {})}
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        signature = (key or self.key).sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{b64url(signature)}"


def other_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
