"""Checkpoints under an object-store prefix (IDV_CHECKPOINT_URL=s3://bucket/prefix), against
moto's S3 server run as a process of its own on loopback: written append-only (conditional
puts, If-None-Match: *), read back and checked by `idv audit verify`; an object changed or
deleted in the bucket is found; a store that ignores the condition is refused.

The store that ignores If-None-Match is moto behind a loopback proxy (in this process) that
drops that one header: no real store here ignores it, and that is the behaviour to refuse."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from flows.settings import Settings
from services.compliance import StoredCheckpoint
from services.context import Actor
from storage.checkpoints import CheckpointError, CheckpointKey, CheckpointLog, ObjectStorePrefix
from storage.db import make_engine, upgrade
from storage.store import Store
from tests.support import run_idv

pytestmark = pytest.mark.subprocess
BUCKET = "idv-audit-checkpoints"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto_server on a loopback port it picks (port 0), its address read from its log."""
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **FAKE_CREDENTIALS},
    )
    try:
        deadline = time.monotonic() + 60
        url = None
        assert proc.stderr is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("moto_server ended before it served")
            m = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "moto_server did not say where it serves"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    for k, v in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    try:
        client.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return client


@pytest.fixture
def prefix(request) -> str:
    """A prefix of this test's own in the shared bucket."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[-60:]
    return f"s3://{BUCKET}/runs/{name}-{os.getpid()}-{time.monotonic_ns()}"


def keys(client, url: str) -> list[str]:
    p = url.split("/", 3)[3] + "/"
    found = client.list_objects_v2(Bucket=BUCKET, Prefix=p).get("Contents", [])
    return sorted(o["Key"][len(p) :] for o in found)


def fill(store: Store, n: int) -> None:
    for i in range(n):
        store.audit.record("test.event", f"S-{i % 3}", {"i": i})
    store.audit.checkpoint()


@pytest.fixture
def stored(database, keyring, tmp_path, s3, s3_server, prefix):
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    log = CheckpointLog(
        ObjectStorePrefix(prefix, endpoint_url=s3_server),
        origin="idv/test",
        key=CheckpointKey(tmp_path / "ck.key", create=True),
    )
    store = Store(engine, keyring, checkpoints=log, checkpoint_every=5)
    yield store, log
    engine.dispose()


def test_when_checkpoints_go_to_an_object_store_then_they_are_read_back_and_verify(
    stored, s3, prefix
):
    store, log = stored
    fill(store, 17)
    assert keys(s3, prefix) == [f"{n:016d}.ckpt" for n in (5, 10, 15, 17)]
    report = store.audit.check()
    assert report.intact and report.checkpoints == 4 and report.events == 17
    note = (
        s3.get_object(Bucket=BUCKET, Key=prefix.split("/", 3)[3] + "/" + keys(s3, prefix)[-1])[
            "Body"
        ]
        .read()
        .decode()
    )
    assert note.splitlines()[:2] == ["idv/test", "17"] and "prev 15" in note


def test_when_a_checkpoint_object_exists_then_it_is_never_overwritten(stored, s3, prefix):
    store, log = stored
    fill(store, 5)
    key = prefix.split("/", 3)[3] + "/" + f"{5:016d}.ckpt"
    before = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert log.place.create(f"{5:016d}.ckpt", b"another note\n") is False
    with pytest.raises(ClientError) as refused:  # the store itself holds the condition
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == before
    assert store.audit.check().intact


def test_when_an_object_is_changed_or_deleted_in_the_bucket_then_verify_names_it(
    stored, s3, prefix
):
    store, log = stored
    fill(store, 12)
    base = prefix.split("/", 3)[3] + "/"
    # Whoever may write the bucket without the condition (not this log) rewrites one.
    s3.put_object(Bucket=BUCKET, Key=base + f"{10:016d}.ckpt", Body=b"idv/test\n10\nAAAA\n")
    report = store.audit.check()
    assert not report.intact and report.file == f"{prefix}/{10:016d}.ckpt"
    assert "not a signed note" in report.rule
    s3.delete_object(Bucket=BUCKET, Key=base + f"{10:016d}.ckpt")
    s3.delete_object(Bucket=BUCKET, Key=base + f"{12:016d}.ckpt")
    report = store.audit.check()  # the newest gone: the database remembers its size
    assert not report.intact and report.file == f"{prefix}/{12:016d}.ckpt"
    assert "missing" in report.rule


class ForgetfulProxy:
    """Forwards every request to `upstream` without its If-None-Match header: a store that
    ignores conditional puts."""

    def __init__(self, upstream: str) -> None:
        client = httpx.Client(base_url=upstream, timeout=10)

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("if-none-match", "host", "content-length")
                }
                reply = client.request(self.command, self.path, headers=headers, content=body)
                self.send_response(reply.status_code)
                for k, v in reply.headers.items():
                    if k.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.content)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward  # noqa: N815

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._client = client

    def __enter__(self) -> ForgetfulProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def test_when_the_store_ignores_if_none_match_then_checkpoints_are_refused(
    database, keyring, tmp_path, s3, s3_server, prefix
):
    engine = make_engine(database.url, schema=database.schema)
    upgrade(engine)
    with ForgetfulProxy(s3_server) as proxy:
        place = ObjectStorePrefix(prefix, endpoint_url=proxy.url)
        log = CheckpointLog(
            place, origin="idv/test", key=CheckpointKey(tmp_path / "ck.key", create=True)
        )
        store = Store(engine, keyring, checkpoints=log, checkpoint_every=1000)
        for i in range(3):
            store.audit.record("test.event", "S-1", {"i": i})
        with pytest.raises(CheckpointError, match="does not honour If-None-Match"):
            store.audit.checkpoint()
        # Put straight to moto, the same object is refused: the proxy is what forgets.
        with pytest.raises(ClientError):
            s3.put_object(
                Bucket=BUCKET,
                Key=prefix.split("/", 3)[3] + "/" + f"{3:016d}.ckpt",
                Body=b"x",
                IfNoneMatch="*",
            )
    engine.dispose()


def stored_in(s3_server, prefix) -> dict:
    """Settings for checkpoints (every 4 events) under `prefix` of the S3 imitation."""
    return dict(
        checkpoint_every=4,
        checkpoint_url=prefix,
        checkpoint_endpoint_url=s3_server,
        checkpoint_region="us-east-1",
    )


def test_when_the_runtime_is_given_a_checkpoint_url_then_audit_verify_and_proofs_use_it(
    database, make_runtime, tmp_path, s3, s3_server, prefix
):
    rt = make_runtime(**stored_in(s3_server, prefix))
    for i in range(9):
        rt.store.audit.record("test.event", "S-1", {"i": i})
    rt.store.audit.checkpoint()
    check = rt.services.audit.check_chain(actor=Actor("aud", "auditor"))
    assert check.intact and check.checkpoints == 3, check
    assert rt.checkpoint_dir is None and not (tmp_path / "home" / "checkpoints").exists()
    assert keys(s3, prefix) == [f"{n:016d}.ckpt" for n in (4, 8, 9)]
    with pytest.raises(ValueError, match="checkpoint_url"):
        Settings(home=tmp_path / "h2", checkpoint_url="s3://Bad_Bucket/x")


def test_when_idv_audit_verify_runs_on_an_object_store_then_it_exits_by_what_it_finds(
    tmp_path, s3, s3_server, prefix
):
    from tests.conftest import sign_in

    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDV_", "PREFECT_"))}
    env.update(
        IDV_HOME=str(tmp_path / "home"),
        IDV_CHECKPOINT_URL=prefix,
        IDV_CHECKPOINT_ENDPOINT_URL=s3_server,
        IDV_CHECKPOINT_EVERY="3",
        **FAKE_CREDENTIALS,
    )
    env = sign_in(env, "auditor")  # signing in writes audit events, and checkpoints

    def verify() -> subprocess.CompletedProcess[str]:
        return run_idv(env, "audit", "verify", "--json")

    first = verify()
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["intact"] is True
    written = keys(s3, prefix)
    assert written and all(k.endswith(".ckpt") for k in written)
    base = prefix.split("/", 3)[3] + "/"
    s3.delete_object(Bucket=BUCKET, Key=base + written[-1])
    gone = verify()
    assert gone.returncode == 1
    doc = json.loads(gone.stdout)
    assert doc["intact"] is False and doc["file"] == f"{prefix}/{written[-1]}"
    env["IDV_CHECKPOINT_DIR"] = str(tmp_path / "cps")
    refused = verify()
    assert refused.returncode == 2 and "IDV_CHECKPOINT_URL" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_when_checkpoints_live_in_an_object_store_then_the_compliance_pack_carries_them(
    database, make_runtime, s3, s3_server, prefix
):
    import hashlib
    from datetime import UTC, datetime, timedelta

    rt = make_runtime(**stored_in(s3_server, prefix))
    for i in range(9):
        rt.store.audit.record("test.event", "S-1", {"i": i})
    rt.store.audit.checkpoint()
    today = datetime.now(UTC).astimezone().date()
    pack = rt.services.compliance.pack(
        (today - timedelta(days=1)).isoformat(),
        (today + timedelta(days=1)).isoformat(),
        actor=Actor("officer", "compliance_officer"),
    )
    files = pack.checkpoints.files
    # Every checkpoint over the period's events, read back from the store, byte for byte.
    assert [f.name for f in files] == [f"{n:016d}.ckpt" for n in (4, 8, 9)]
    for f in files:
        assert isinstance(f, StoredCheckpoint)
        body = s3.get_object(Bucket=BUCKET, Key=f.url.split("/", 3)[3])["Body"].read()
        assert f.data == body and f.sha256 == hashlib.sha256(body).hexdigest()
    assert pack.checkpoints.folder == prefix
    # The pack's JSON names each file and its hash; the bytes go beside it, not inside.
    assert [set(f) for f in pack.model_dump(mode="json")["checkpoints"]["files"]] == [
        {"name", "url", "size", "sha256"}
    ] * 3
