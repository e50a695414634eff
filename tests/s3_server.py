"""A local S3-compatible server for tests and benchmarks: moto's server mode in a subprocess.

moto (PyPI) implements the S3 API in memory, including the conditional writes Lance
commits with (``PUT`` with ``If-None-Match: *`` answers 412 when the object exists) and
``If-Match`` updates. It listens on 127.0.0.1 only, on a free port, and is stopped
(its process killed by id) when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

ACCESS_KEY = "embed-assets-test"
SECRET_KEY = "embed-assets-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    log_path: str

    def storage_options(self) -> dict[str, str]:
        """Lance/object_store options for this server (explicit credentials)."""
        return {"aws_endpoint": self.endpoint, "allow_http": "true", "aws_access_key_id": ACCESS_KEY,
                "aws_secret_access_key": SECRET_KEY, "region": REGION}

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables for this server."""
        return {"AWS_ENDPOINT": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}

    def client(self):  # boto3 comes with moto (dev extra)
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server(log_dir: str) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free port of 127.0.0.1; stop it on exit."""
    port = _free_port()
    log_path = os.path.join(log_dir, "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    with open(log_path, errors="replace") as f:
                        raise RuntimeError(f"moto server did not start: {f.read()[-2000:]}") from None
                time.sleep(0.2)
        yield S3Server(endpoint=endpoint, log_path=log_path)
    finally:
        proc.kill()
        proc.wait(timeout=30)
