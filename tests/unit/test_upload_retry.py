"""Uploads outlast an S3 server that is briefly unreachable: they retry with exponential backoff
(tenacity) for up to a minute, then give up with the server's error. The server is the real
SeaweedFS one; the outage is a TCP relay in front of it that is down for a while."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from doctune.config import Settings
from doctune.store.objects import ObjectStore, retrying_upload

from tests.unit.test_cli import s3  # noqa: F401  (a bucket of its own on the session's real SeaweedFS server)


class Relay:
    """Forwards 127.0.0.1:<port> to the S3 server once ``up()`` is called; until then the port
    refuses connections, as a stopped server's does."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server: socket.socket | None = None

    def up(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
def relay(s3):  # noqa: F811
    r = Relay(int(s3["s3_endpoint"].rsplit(":", 1)[1]))
    yield r
    r.close()


def test_an_upload_waits_for_the_s3_server_to_come_back(s3, relay, tmp_path):  # noqa: F811
    store = ObjectStore(Settings(**{**s3, "s3_endpoint": f"http://127.0.0.1:{relay.port}"}))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.bin").write_bytes(b"w" * 1000)
    threading.Timer(4.0, relay.up).start()  # the server is back 4 s after the upload starts
    started = time.monotonic()
    assert store.upload_dir(tmp_path / "ckpt", "tenants/team-r/retry") == 1
    assert time.monotonic() - started >= 3.5  # it really waited through the outage
    assert store.get_bytes("tenants/team-r/retry/weights.bin") == b"w" * 1000
    store.delete_prefix("tenants/team-r/")


def test_an_upload_gives_up_with_the_servers_error_once_its_time_is_spent():
    attempts = []
    with pytest.raises(ConnectionError):
        for attempt in retrying_upload("a test upload", retry_s=1.0):
            with attempt:
                attempts.append(time.monotonic())
                raise ConnectionError("connection refused")
    assert len(attempts) >= 2 and attempts[-1] - attempts[0] < 5  # retried, with backoff, then stopped


def test_ray_trains_filesystem_retries_in_every_process_it_is_pickled_to(s3, relay):  # noqa: F811
    """Ray Train's controller writes its checkpoint index through this filesystem with no retry of
    its own: the filesystem retries, also after the pickling that ships it to the controller."""
    import pickle

    import cloudpickle

    store = ObjectStore(Settings(**{**s3, "s3_endpoint": f"http://127.0.0.1:{relay.port}"}))
    fs = pickle.loads(cloudpickle.dumps(store.pyarrow_fs()))
    threading.Timer(3.0, relay.up).start()  # the server answers 3 s after the write starts
    started = time.monotonic()
    with fs.open_output_stream(f"{s3['bucket']}/tenants/team-r/index.json") as f:
        f.write(b"{}")
    assert time.monotonic() - started >= 2.5
    assert store.get_bytes("tenants/team-r/index.json") == b"{}"
    store.delete_prefix("tenants/team-r/")
