"""Off-site backups: an environment whose `backups.target` is an S3 URL backs up to
the bucket (multipart upload, checked after upload), restores and drills from it,
and has retention applied there. Against moto's S3 server on a loopback port."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from test_backup_target_conformance import _s3_endpoint
from test_data import Env, config_text
from tristage.api import Tristage


@pytest.fixture(params=["sqlite", "postgres"])
def remote(request: pytest.FixtureRequest, api: Tristage, repo: Path) -> Iterator[Env]:
    endpoint = _s3_endpoint()
    bucket = "offsite-" + secrets.token_hex(4)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    e = Env(api, repo, request.param, secrets.token_hex(4))
    text = config_text(request.param, e.token, {}, encrypt=True).replace(
        "[environments.production.backups]\n",
        f'[environments.production.backups]\ntarget = "s3://{bucket}/tristage?endpoint={endpoint}"\n',
    )
    (repo / "tristage.toml").write_text(text)
    api.open_project(repo)
    e.bucket = bucket  # type: ignore[attr-defined]
    yield e
    e.cleanup()


def _objects(env: Env) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=_s3_endpoint())
    listing = s3.list_objects_v2(Bucket=env.bucket)  # type: ignore[attr-defined]
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_backup_to_s3_restores_drills_and_prunes_there(remote: Env) -> None:
    remote.seed("production", users=12)
    original = remote.dump("production")
    info = remote.api.data.backup("shop", "production")
    key = f"tristage/shop/production/{info.id}.tsbackup.zip"
    assert _objects(remote) == [key]
    assert not list((remote.api.home / "backups").rglob("*.zip"))  # nothing kept locally
    remote.execute("production", ["DELETE FROM payments"])
    result = remote.api.data.restore("shop", "production", info.id, yes=True)
    assert remote.dump("production") == original
    report = remote.api.data.drill("shop", "production", info.id)
    assert report.passed, report.problems
    # no downloaded copy is left on this disk
    leftovers = [p for p in (remote.api.home / "tmp").rglob("*") if p.is_file()]
    assert leftovers == []
    # retention deletes in the bucket: three more backups, keep the newest only
    for _ in range(3):
        remote.api.data.backup("shop", "production", kind="scheduled")
    cfg = remote.repo / "tristage.toml"
    old, new = "daily = 2, weekly = 1, monthly = 1", "daily = 1, weekly = 0, monthly = 0"
    cfg.write_text(cfg.read_text().replace(old, new))
    remote.api.open_project(remote.repo)
    pruned = remote.api.data.prune("shop", "production")
    # the manual backup stays until deleted by hand; retention took the others there
    assert info.id in pruned.keep
    assert result.safety_backup is None or result.safety_backup in pruned.delete
    assert len(_objects(remote)) == len(pruned.keep) == 2
    remote.api.data.delete_backup("shop", "production", info.id, yes=True)
    assert len(_objects(remote)) == 1


def test_large_backups_go_up_in_parts_and_are_checked_when_read(tmp_path: Path) -> None:
    from tristage.edges.s3_target import PART_SIZE, RemoteError, S3Target

    endpoint = _s3_endpoint()
    bucket = "parts-" + secrets.token_hex(4)
    target = S3Target(bucket, "p", tmp_path / "spool", endpoint)
    target.client.create_bucket(Bucket=bucket)
    data = secrets.token_bytes(PART_SIZE + (3 << 20))
    with target.create("big") as f:
        f.write(data)
    head = target.client.head_object(Bucket=bucket, Key="p/big.tsbackup.zip")
    assert head["ETag"].strip('"').endswith("-2") and head["ContentLength"] == len(data)
    with target.open("big") as f:
        assert f.read() == data
    # an object changed behind tristage's back no longer matches its recorded sha256
    target.client.put_object(Bucket=bucket, Key="p/big.tsbackup.zip", Body=b"other",
                             Metadata=head["Metadata"])  # fmt: skip
    with pytest.raises(RemoteError, match="differs from what was uploaded"):
        target.open("big")
    assert list((tmp_path / "spool").iterdir()) == []
