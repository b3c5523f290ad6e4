"""An S3-compatible `BackupTarget` (AWS S3, MinIO, Ceph, Garage…) through boto3.

A backup is written to a private local spool file (0600 in a 0700 directory) while it
is made, then uploaded as a multipart upload (parts of `PART_SIZE`, each sent with its
MD5 so the server checks it) and completed; only then is it an object the target lists.
After the upload the object's ETag is compared with the one computed locally from the
parts (the MD5 of the parts' MD5s) and its size with the file's, and the sha256 is
kept in the object's metadata: a mismatch deletes the object and fails the backup.

A write that dies leaves its spool file and at most an unfinished multipart upload:
`sweep` removes spool files and aborts uploads older than the given age. Reading a
backup downloads it into an unlinked temporary file (nothing of it stays on disk).
Credentials come from boto3's usual chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
`~/.aws/credentials`, an instance role), never from `tristage.toml`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import NotFound, TristageError, UsageError
from ..paths import private_mkdirs, private_open
from .backup_targets import SUFFIX, TMP_PREFIX, StoredBackup, check_name

PART_SIZE = 8 << 20  # the multipart threshold and part size (S3's minimum part is 5 MiB)
_CHUNK = 1 << 20


class RemoteError(TristageError):
    pass


def parse_s3_url(url: str) -> tuple[str, str, str | None]:
    """`s3://bucket/prefix?endpoint=http://host:9000` -> (bucket, prefix, endpoint)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(
            f"{url!r} is not an S3 URL", "write it as s3://bucket/prefix (?endpoint=URL)"
        )
    endpoint = parse_qs(parts.query).get("endpoint", [None])[0]
    return parts.netloc, parts.path.strip("/"), endpoint


class S3Target:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        spool: Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.spool = spool
        self.endpoint_url = endpoint_url
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    s3={"addressing_style": "path"} if endpoint_url else None,
                ),
            )
        self.client = client

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.endpoint_url}" if self.endpoint_url else where

    def _key(self, name: str) -> str:
        base = check_name(name) + SUFFIX
        return f"{self.prefix}/{base}" if self.prefix else base

    def _errors(self, what: str, exc: Exception) -> RemoteError:
        return RemoteError(
            f"{what} on {self.describe()}: {type(exc).__name__}: {exc}",
            "check the endpoint, the bucket and the credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY), then run again",
        )

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._errors("cannot look up " + key, exc) from None

    @contextmanager
    def create(self, name: str) -> Iterator[IO[bytes]]:
        key = self._key(name)
        if self._exists(key):
            raise UsageError(f"backup {name} already exists")
        private_mkdirs(self.spool)
        tmp = self.spool / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
        f = private_open(tmp, exclusive=True)
        try:
            yield f
            f.flush()
            if not tmp.exists():
                raise UsageError(f"backup {name} was swept before it was complete")
            f.close()
            if self._exists(key):
                raise UsageError(f"backup {name} already exists")
            self._upload(tmp, key)
        finally:
            try:
                f.close()
            except OSError:
                pass
            tmp.unlink(missing_ok=True)

    def _upload(self, path: Path, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        sha = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
        digests: list[bytes] = []
        size = path.stat().st_size
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata={"sha256": sha.hexdigest()}
            )
            uid = upload["UploadId"]
        except (BotoCoreError, ClientError) as exc:
            raise self._errors("cannot start the upload of " + key, exc) from None
        try:
            parts = []
            with open(path, "rb") as f:
                number = 1
                while True:
                    data = f.read(PART_SIZE)
                    if not data and number > 1:
                        break
                    md5 = hashlib.md5(data, usedforsecurity=False).digest()
                    digests.append(md5)
                    part = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=uid, PartNumber=number,
                        Body=data, ContentMD5=base64.b64encode(md5).decode(),
                    )  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": part["ETag"]})
                    number += 1
                    if len(data) < PART_SIZE:
                        break
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=uid)
            except Exception:  # the first error is the one to report
                pass
            if isinstance(exc, BotoCoreError | ClientError):
                raise self._errors("cannot upload " + key, exc) from None
            raise
        expected = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        expected += f"-{len(digests)}"
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        if head.get("ContentLength") != size or etag != expected:
            self.client.delete_object(Bucket=self.bucket, Key=key)
            raise RemoteError(
                f"the upload of {key} to {self.describe()} does not match what was sent "
                f"(size {head.get('ContentLength')} vs {size}, ETag {etag} vs {expected})",
                "the object was deleted; run the backup again",
            )

    def list(self) -> list[StoredBackup]:
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    base = obj["Key"][len(prefix) :]
                    if "/" in base or not base.endswith(SUFFIX):
                        continue
                    out.append(
                        StoredBackup(
                            base[: -len(SUFFIX)], int(obj["Size"]), obj["LastModified"].timestamp()
                        )
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._errors("cannot list backups", exc) from None
        return sorted(out, key=lambda b: b.name)

    def open(self, name: str) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(name)
        private_mkdirs(self.spool)
        f = tempfile.TemporaryFile(dir=self.spool)  # noqa: SIM115 - unlinked: 0600, gone when closed
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            sha = hashlib.sha256()
            for chunk in obj["Body"].iter_chunks(_CHUNK):
                sha.update(chunk)
                f.write(chunk)
            want = obj.get("Metadata", {}).get("sha256")
            if want and want != sha.hexdigest():
                raise RemoteError(
                    f"backup {name} on {self.describe()} differs from what was uploaded (sha256)",
                    "restore another backup",
                )
        except ClientError as exc:
            f.close()
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(
                    f"no backup {name} in {self.describe()}",
                    "list them with 'tristage db backups ENV'",
                ) from None
            raise self._errors(f"cannot read backup {name}", exc) from None
        except BotoCoreError as exc:
            f.close()
            raise self._errors(f"cannot read backup {name}", exc) from None
        except BaseException:
            f.close()
            raise
        f.seek(0)
        return f

    def local_path(self, name: str) -> Path | None:
        check_name(name)
        return None

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._errors(f"cannot delete backup {name}", exc) from None

    def sweep(self, older_than: float) -> int:
        n = 0
        cutoff = time.time() - older_than
        if self.spool.is_dir():
            for p in self.spool.glob(f"{TMP_PREFIX}*"):
                try:
                    if p.stat().st_mtime < cutoff:
                        p.unlink()
                        n += 1
                except FileNotFoundError:
                    pass
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        except Exception:  # sweeping is best effort
            return n
        for u in uploads.get("Uploads", []):
            if u["Initiated"].timestamp() < cutoff:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )
                n += 1
        return n


def spool_dir(home: Path) -> Path:
    return home / "tmp" / "backup-uploads"
