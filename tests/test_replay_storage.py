"""``eventtracking replay s3://...`` against a real S3-compatible server (moto's, on loopback) and
the real collector: order, every line once, a connection cut mid-object, clear errors."""

from __future__ import annotations

import gzip

import orjson
import pytest
from object_store import ACCESS_KEY, SECRET_KEY, CuttingProxy, MotoServer, s3_env

from eventtracking.cli import main
from eventtracking.replay.storage import list_objects

BUCKET = "tracking-archive"
# key below the prefix -> (lines, gzip?)
OBJECTS = {
    "2024/01/tracking.log-20240101.gz": (1500, True),
    "2024/01/tracking.log-20240102": (700, False),
    "2024/02/tracking.log-20240201.gz": (900, True),  # gzip recognised by content
    "2024/10/tracking.log": (400, False),
    "2024/02/tracking.log-20240202": (5, False),
}
HIDDEN = {".staging/tracking.log": 9}


def tracking_lines(count: int, tag: str) -> bytes:
    """Legacy tracking-log lines, about 500 bytes each (a tag per object keeps them apart)."""
    return b"".join(
        orjson.dumps(
            {
                "event_type": "edx.course.enrollment.activated",
                "time": f"2024-01-01T00:00:{i % 60:02d}.{i:06d}+00:00",
                "username": "amara",
                "context": {"user_id": 7, "course_id": "course-v1:DemoX+Py101+2025", "path": f"/{tag}/{i}"},
                "event": {"mode": "audit", "padding": "x" * 300},
            }
        )
        + b"\n"
        for i in range(count)
    )


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """A moto server holding a nested prefix of gzip and plain logs, and objects beside it."""
    server = MotoServer(str(tmp_path_factory.mktemp("moto"))).start()
    try:
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for key, (count, compress) in OBJECTS.items():
            body = tracking_lines(count, key)
            body = gzip.compress(body) if compress else body
            client.put_object(Bucket=BUCKET, Key=f"logs/{key}", Body=body)
        for key, count in HIDDEN.items():
            client.put_object(Bucket=BUCKET, Key=f"logs/{key}", Body=tracking_lines(count, key))
        client.put_object(Bucket=BUCKET, Key="logs-other/tracking.log", Body=tracking_lines(3, "other"))
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(moto, monkeypatch, tmp_path):
    """The S3 client environment pointing at the moto server; no write key of our own."""
    import s3fs

    for name, value in s3_env(moto.url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SEGMENT_WRITE_KEY", "storage-test-key")
    monkeypatch.chdir(tmp_path)
    s3fs.S3FileSystem.clear_instance_cache()  # a new endpoint or credentials: a new client
    yield moto
    s3fs.S3FileSystem.clear_instance_cache()


TOTAL = sum(count for count, _ in OBJECTS.values())


def replay(capsys, *argv: str) -> tuple[int, str]:
    code = main(["replay", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_objects_are_listed_in_key_order_hidden_ones_and_other_prefixes_left_out(s3):
    listed = list_objects(f"s3://{BUCKET}/logs/")
    assert [url for url, _ in listed] == [f"s3://{BUCKET}/logs/{key}" for key in sorted(OBJECTS)]
    assert all(size and size > 0 for _, size in listed)
    assert list_objects(f"s3://{BUCKET}/logs") == listed  # with or without the trailing slash


def test_replay_of_a_prefix_delivers_every_line_once_and_a_rerun_resends_nothing(
    capsys, s3, collector, tmp_path
):
    checkpoint = tmp_path / "cp.json"
    argv = (f"s3://{BUCKET}/logs/", "--host", collector.url, "--checkpoint", str(checkpoint))
    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert f"lines read            {TOTAL:,} in {len(OBJECTS)} inputs" in output
    assert collector.count() == len(set(collector.message_ids())) == TOTAL
    recorded = orjson.loads(checkpoint.read_bytes())["files"]
    assert {key: entry["line"] for key, entry in recorded.items()} == {
        f"s3://{BUCKET}/logs/{key}": count for key, (count, _) in OBJECTS.items()
    }
    assert SECRET_KEY not in output and ACCESS_KEY not in output

    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert f"already acknowledged  {TOTAL:,} lines" in output
    assert collector.count() == TOTAL


def test_the_same_lines_from_s3_and_from_disk_have_the_same_message_ids(capsys, s3, collector, tmp_path):
    key = "2024/01/tracking.log-20240101.gz"
    local = tmp_path / "copy.gz"
    local.write_bytes(gzip.compress(tracking_lines(OBJECTS[key][0], key)))
    assert replay(capsys, str(local), "--host", collector.url)[0] == 0
    local_ids = set(collector.message_ids())
    assert replay(capsys, f"s3://{BUCKET}/logs/{key}", "--host", collector.url)[0] == 0
    assert set(collector.message_ids()) == local_ids and collector.count() == 2 * len(local_ids)


@pytest.mark.parametrize("cuts", [2, 8], ids=["within-sdk-retries", "past-sdk-retries"])
def test_a_connection_cut_mid_object_resumes_without_loss(capsys, s3, collector, monkeypatch, cuts):
    """The proxy cuts connections once they carried 150 KB back: inside the 210 KB-2 MB objects.
    s3fs retries a short body 5 times; past that the replay reopens the object at the same byte."""
    proxy = CuttingProxy(s3.port, after=150_000, cuts=cuts)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        code, output = replay(capsys, f"s3://{BUCKET}/logs/", "--host", collector.url)
    finally:
        proxy.close()
    assert code == 0, output
    assert proxy.cuts_done >= min(cuts, 2), (proxy.cuts_done, proxy.connections)  # the fault did happen
    assert collector.count() == len(set(collector.message_ids())) == TOTAL


def test_a_run_cut_for_good_mid_object_resumes_from_the_checkpoint(
    capsys, s3, collector, monkeypatch, tmp_path
):
    """A 16 MB object, read in 5 MiB ranges, whose store becomes unreachable after 10 MB: the run
    cannot finish it; its checkpoint stays at the last line acknowledged, and a rerun on a sound
    connection sends the rest (what was read past the checkpoint again, under the same ids).
    The SDK's own retries are cut to one attempt (AWS_MAX_ATTEMPTS, the SDK's setting) to keep
    the test short; s3fs's and the replay's own retries stay."""
    total = 30_000
    s3.client().put_object(Bucket=BUCKET, Key="big/tracking.log", Body=tracking_lines(total, "big"))
    big = f"s3://{BUCKET}/big/tracking.log"
    checkpoint = tmp_path / "cp.json"
    argv = (big, "--host", collector.url, "--checkpoint", str(checkpoint), "--checkpoint-every", "2000")
    proxy = CuttingProxy(s3.port, after=10_000_000, cuts=1000, for_good=True)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        code, output = replay(capsys, *argv)
    finally:
        proxy.close()
    assert code == 1, output
    assert f"{big}:" in output and "cannot read further" in output
    line = orjson.loads(checkpoint.read_bytes())["files"][big]["line"]
    assert 0 < line < total, line
    sent = collector.count()

    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    code, output = replay(capsys, *argv)
    assert code == 0, output
    assert f"already acknowledged  {line:,} lines" in output
    assert collector.count() == len(set(collector.message_ids())) + (sent - line) == total + (sent - line)


@pytest.mark.parametrize(
    "url, message",
    [
        ("s3://no-such-bucket/logs/", "s3://no-such-bucket/logs/: no such bucket or object"),
        ("ftp2://host/logs/", "ftp2://host/logs/: unknown scheme ftp2://"),
        (f"s3://{BUCKET}/none/", f"no input to replay: s3://{BUCKET}/none/ holds no files"),
    ],
)
def test_a_missing_bucket_an_unknown_scheme_or_an_empty_prefix_is_one_line_and_exit_2(
    capsys, s3, url, message
):
    code, output = replay(capsys, url, "--dry-run")
    assert code == 2
    [line] = output.splitlines()  # one line, no traceback
    assert line.startswith(f"eventtracking replay: {message}"), line


def test_bad_credentials_are_one_line_and_exit_2_without_the_credentials(capsys, monkeypatch, tmp_path):
    import s3fs

    checking = MotoServer(str(tmp_path), authenticate=True).start()  # only keys it issued pass
    try:
        for name, value in s3_env(checking.url).items():
            monkeypatch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        code, output = replay(capsys, f"s3://{BUCKET}/logs/", "--dry-run")
    finally:
        checking.stop()
        s3fs.S3FileSystem.clear_instance_cache()
    assert code == 2, output
    [line] = output.splitlines()
    assert line.startswith(f"eventtracking replay: s3://{BUCKET}/logs/: access denied: check the credentials")
    assert ACCESS_KEY not in output and SECRET_KEY not in output
