"""A registry token server, for the token forms of registry auth.

docker-registry configured with `auth: token` sends clients to this server's
realm; it answers with RS256 JWTs that the registry verifies against the
certificate written here. It implements the two grants Docker uses:

  GET  /token?service=&scope=   with Basic user:password  (also `auth` strings)
  POST /token grant_type=refresh_token&refresh_token=<identity token>

and the registry accepts a token minted by `mint()` as a bearer registry token.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ISSUER = "crishim-test-issuer"
SERVICE = "crishim-test-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key) -> str:
    """The registry's name for a key: base32 of SHA-256(DER)[:30], in groups of four."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    def __init__(self, root: Path, username: str, password: str) -> None:
        self.root = root
        self.username = username
        self.password = password
        self.identity_token = secrets.token_urlsafe(24)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = libtrust_key_id(self.key.public_key())
        self.cert_path = root / "token-cert.pem"
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> TokenServer:
        self.root.mkdir(parents=True, exist_ok=True)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                header = self.headers.get("Authorization", "")
                user = owner._basic_user(header)
                if header and user is None:
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                scopes = query.get("scope", [])
                self._send(200, owner._grant(user, scopes))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type") != ["refresh_token"]:
                    return self._send(400, {"error": "unsupported_grant_type"})
                if form.get("refresh_token") != [owner.identity_token]:
                    return self._send(401, {"error": "invalid_grant"})
                body = owner._grant(owner.username, form.get("scope", []))
                self._send(
                    200,
                    {
                        "access_token": body["token"],
                        "expires_in": 300,
                        "refresh_token": owner.identity_token,
                    },
                )

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def realm(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def _basic_user(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if (user, password) == (self.username, self.password) else None

    def _grant(self, user: str | None, scopes: list[str]) -> dict:
        access = []
        if user is not None:  # anonymous clients get a token without access
            for scope in scopes:
                kind, name, actions = scope.split(":", 2)
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        return {"token": self.mint(user or "", access), "expires_in": 300}

    def mint(self, subject: str, access: list[dict]) -> str:
        """A signed bearer token the registry accepts for `access`."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"
