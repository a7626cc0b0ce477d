"""Files written for rows of a transaction that may still roll back.

A film, its derivatives and a heatmap are written to storage before their row commits (the row names
the file, so the file must exist when the row does). If the transaction, or only the savepoint that
wrote them, rolls back (a cut database connection, a refused request, a concurrent winner), the rows
are gone and the files must go too, at once, not an hour later when the orphan sweep finds them.

``file_remove_on_rollback`` ties the file to Django's own savepoint-aware bookkeeping: it registers an
``on_commit`` callback for the file. Django runs that callback when the outermost transaction commits,
and discards it when the transaction, or the savepoint it was registered in, rolls back, or when the
connection closes with the transaction still open. A discarded callback is freed at once (it is held
only by the connection's list), and its finalizer removes the file. No rollback hook is needed, and a
file written in a savepoint that rolls back inside a transaction that commits is removed as well.

Callbacks run in the order they were registered; the file's is registered when the file is written,
before the study's own follow-ups (queueing inference), so a follow-up that raises cannot drop it.
"""

from __future__ import annotations

import logging
import weakref

from django.core.files.storage import Storage
from django.db import DEFAULT_DB_ALIAS, transaction

logger = logging.getLogger(__name__)


def file_remove_on_rollback(*, storage: Storage, name: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Remove `name` from `storage` if the current transaction (or savepoint) does not commit.

    Outside a transaction it does nothing: the row that names the file has already committed.
    """
    if not name or not transaction.get_connection(using).in_atomic_block:
        return
    committed = [False]

    def keep() -> None:
        committed[0] = True

    weakref.finalize(keep, _remove_unless_committed, storage, name, committed)
    transaction.on_commit(keep, using=using, robust=True)


def _remove_unless_committed(storage: Storage, name: str, committed: list[bool]) -> None:
    if committed[0]:
        return
    try:
        storage.delete(name)
    except OSError:  # a finalizer must not raise; the orphan sweep removes it later
        logger.exception("Could not remove %s, written for rows that rolled back", name)
    else:
        logger.info("Removed %s: the rows it was written for rolled back", name)
