"""Study creation that a client can safely retry, keyed by its `Idempotency-Key`.

The first request with a key creates the study and remembers the key with a
fingerprint of the request; a retry with the same key and the same request
gets that study back instead of a second one, and the same key with a
different request is refused. Keys are per user and do not expire.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from diagnostics.models import IdempotencyRecord, Study, User

from .audit import audit_record

MAX_KEY_LENGTH = 200


class IdempotencyKeyReused(Exception):
    """The key was already used for a different request."""

    def __init__(self, *, key: str, study_id: int) -> None:
        super().__init__(
            f"The Idempotency-Key {key!r} was already used for a different request (it created study {study_id}). "
            "Use a new key for a new study."
        )
        self.study_id = study_id


@dataclass(frozen=True)
class IdempotentResult:
    study: Study
    replayed: bool  # True: an earlier request with this key created the study


def idempotency_key_validate(*, key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ValidationError(
            {"Idempotency-Key": f"Use 1 to {MAX_KEY_LENGTH} printable ASCII characters, e.g. a UUID."}
        )
    return key


def idempotency_fingerprint(*, fields: dict[str, Any], files: Sequence[tuple[str, bytes]]) -> str:
    """sha256 of what a study-creating request asks for, the same whichever upload format carried it."""
    canonical = {
        "fields": {name: str(value) for name, value in sorted(fields.items())},
        "files": [[name, hashlib.sha256(data).hexdigest()] for name, data in files],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _replay(record: IdempotencyRecord, *, key: str, request_sha256: str) -> IdempotentResult:
    if record.request_sha256 != request_sha256:
        raise IdempotencyKeyReused(key=key, study_id=record.study_id)
    return IdempotentResult(study=record.study, replayed=True)


def idempotency_replay(*, user: User, key: str, request_sha256: str) -> IdempotentResult | None:
    """The study an earlier request with this key created, or None if the key is new.

    Raises IdempotencyKeyReused if the earlier request differed from this one.
    """
    record = IdempotencyRecord.objects.select_related("study").filter(user=user, key=key).first()
    return None if record is None else _replay(record, key=key, request_sha256=request_sha256)


def idempotency_key_record(*, user: User, key: str, request_sha256: str, study: Study) -> None:
    """Remember that `key` created `study`. Call in the study's transaction: the study and the key
    commit together, so of two concurrent requests with one key the second's IntegrityError rolls
    its study back (its inference task, queued on commit, is never sent)."""
    IdempotencyRecord.objects.create(user=user, key=key, request_sha256=request_sha256, study=study)
    audit_record(
        action="study.idempotency_key_recorded",
        actor=user,
        target=study,
        team_id=user.team_id,
        detail={"key": key, "request_sha256": request_sha256},
    )
