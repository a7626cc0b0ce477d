"""The list pages on the seeded database, one request at a time: each page's server time split
into database and Python (views, serializers, templates); each list's SQL with JIT on and off and
with candidate indexes (created here, in the benchmark database only, then dropped).

Run in the benchmark environment after seeding: python -m benchmarks.queries --out FILE
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Candidate indexes, each for a query it serves. Not migrations: the benchmark measures them.
PROPOSED_INDEXES = {
    "prediction_latest_primary": (
        "CREATE INDEX bench_prediction_latest_primary ON diagnostics_prediction "
        "(image_id, created_at DESC) INCLUDE (probability, label) WHERE role = 'primary'",
        "the worklist's latest-prediction subqueries (one per study)",
    ),
    "prediction_created": (
        "CREATE INDEX bench_prediction_created ON diagnostics_prediction (created_at DESC, id DESC)",
        "the API prediction list, newest first",
    ),
}


def queries() -> dict[str, Callable[[], object]]:
    """Each list exactly as its view builds it (first page)."""
    from diagnostics.api.selectors import prediction_list_for_user
    from diagnostics.forms import WorklistFilterForm
    from diagnostics.models import Patient, User
    from diagnostics.selectors import patient_list_for_user, study_list_for_user

    user = User.objects.get(username="bench-clinician")
    patient = Patient.objects.filter(team_id=user.team_id).order_by("pk").first()
    studies = study_list_for_user(user=user)

    def worklist(sort: str) -> Callable[[], object]:
        return lambda: list(WorklistFilterForm({"sort": sort}).filter(studies)[:200])

    return {
        "worklist, triage order (default)": worklist("triage"),
        "worklist, newest first": worklist("newest"),
        "study page: previous/next in the worklist": lambda: list(
            WorklistFilterForm({}).filter(studies).values_list("pk", flat=True)[:200]
        ),
        "patient page: the patient's studies": lambda: list(studies.filter(patient=patient)),
        "API study list (count + first 50)": lambda: (studies.count(), list(studies[:50])),
        "API prediction list (count + first 50)": lambda: (
            prediction_list_for_user(user=user).count(),
            list(prediction_list_for_user(user=user)[:50]),
        ),
        "API patient list (count + first 50)": lambda: (
            patient_list_for_user(user=user).count(),
            list(patient_list_for_user(user=user)[:50]),
        ),
    }


def time_query(call: Callable[[], object], runs: int) -> float:
    call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


def pages(runs: int) -> dict[str, dict[str, float]]:
    """Median server time of each page in process (no HTTP, no concurrency), and its database part."""
    from django.db import connection
    from django.test import Client

    from diagnostics.models import ApiToken, Patient, Study, User

    user = User.objects.get(username="bench-clinician")
    web = Client(HTTP_HOST="127.0.0.1")
    web.force_login(user)
    token = ApiToken.objects.filter(team_id=user.team_id).first()
    assert token is not None
    api = Client(HTTP_HOST="127.0.0.1")
    api.force_login(token.user)  # session auth as the API client account; same view code as a token
    study = Study.objects.filter(patient__team_id=user.team_id, status=Study.Status.DONE).order_by("-pk").first()
    patient = Patient.objects.filter(team_id=user.team_id).order_by("pk").first()
    assert study is not None and patient is not None
    urls = {
        "worklist (200 rows, triage)": (web, "/"),
        "study page": (web, f"/studies/{study.pk}/"),
        "patient page": (web, f"/patients/{patient.pk}/"),
        "API study list (50)": (api, "/api/v1/studies/"),
        "API prediction list (50)": (api, "/api/v1/predictions/"),
        "API patient list (50)": (api, "/api/v1/patients/"),
    }
    database_ms = [0.0]

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            database_ms[0] += (time.perf_counter() - started) * 1000.0

    out: dict[str, dict[str, float]] = {}
    with connection.execute_wrapper(timed):
        for name, (client, url) in urls.items():
            client.get(url)
            totals, databases = [], []
            for _ in range(runs):
                database_ms[0] = 0.0
                started = time.perf_counter()
                response = client.get(url)
                totals.append((time.perf_counter() - started) * 1000.0)
                databases.append(database_ms[0])
                assert response.status_code == 200, (url, response.status_code)
            total, database = statistics.median(totals), statistics.median(databases)
            out[name] = {"total_ms": total, "database_ms": database, "python_ms": total - database}
    return out


def measure(runs: int) -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # the load test's writes leave autovacuum work behind
    calls = queries()
    results: dict[str, Any] = {"runs": runs, "queries": {name: {} for name in calls}, "indexes": {}}
    from diagnostics.models import Study

    results["seeded"] = Study.objects.count()
    results["pages"] = pages(runs)

    def column(label: str) -> None:
        for name, call in calls.items():
            results["queries"][name][label] = time_query(call, runs)

    with connection.cursor() as cursor:
        cursor.execute("SET jit = on")
        column("jit on (PostgreSQL default)")
        cursor.execute("SET jit = off")
        column("jit off (portal setting)")
        for key, (sql, purpose) in PROPOSED_INDEXES.items():
            cursor.execute(sql)
            cursor.execute("ANALYZE diagnostics_prediction")
            results["indexes"][key] = {"sql": sql.replace("bench_", ""), "for": purpose}
            column(f"+ index {key}")
            cursor.execute(f"DROP INDEX bench_{key}")  # noqa: S608 - a name from the dict above
        cursor.execute("ANALYZE diagnostics_prediction")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import django

    django.setup()
    Path(args.out).write_text(json.dumps(measure(args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
