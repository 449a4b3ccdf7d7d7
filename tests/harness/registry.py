"""A Docker registry (Debian's docker-registry) on 127.0.0.1 with htpasswd auth."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.harness.dockerd import PrivateDockerd
from tests.harness.procs import free_port, port_open, run, stop_process, wait_for

REGISTRY = "/usr/bin/docker-registry"


class Registry:
    """htpasswd (Basic) auth by default; token auth when given a TokenServer."""

    def __init__(
        self, root: Path, username: str = "crishim", password: str = "s3cret-pw", tokens=None
    ) -> None:
        self.root = root
        self.username = username
        self.password = password
        self.tokens = tokens
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = root / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tokens is None:
            htpasswd = self.root / "htpasswd"
            # docker-registry accepts bcrypt entries only.
            htpasswd.write_text(run("htpasswd", "-Bbn", self.username, self.password))
            auth = f"auth: {{htpasswd: {{realm: crishim-test, path: {htpasswd}}}}}\n"
        else:
            from tests.harness.tokens import ISSUER, SERVICE

            auth = (
                f"auth: {{token: {{realm: '{self.tokens.realm}', service: {SERVICE}, "
                f"issuer: {ISSUER}, rootcertbundle: {self.tokens.cert_path}}}}}\n"
            )
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}},"
            " delete: {enabled: true}}\n"
            f"http: {{addr: {self.address}}}\n" + auth
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [REGISTRY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(lambda: port_open(self.port), 30, f"registry on {self.address}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def push(self, dockerd: PrivateDockerd, image: str, name: str) -> str:
        """Push a local image of `dockerd` as `name`; return the pushed reference."""
        ref = f"{self.address}/{name}"
        dockerd.docker(
            "login",
            "-u",
            self.username,
            "--password-stdin",
            self.address,
            input=self.password.encode(),
        )
        dockerd.docker("tag", image, ref)
        dockerd.docker("push", ref)
        return ref
