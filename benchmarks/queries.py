"""The list pages on the seeded database, one request at a time: each page's server time split
into database and Python (views, serializers, templates); each list's SQL with PostgreSQL's JIT on
and off. The indexes are the migrations' (no candidate index is created here).

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


def queries() -> dict[str, Callable[[], object]]:
    """Each list exactly as its view builds it: the worklist's first page (Paginator: count, then
    `WORKLIST_LIMIT` rows), the study page's previous/next ids, the API lists' first page (count, then
    `PortalPagination.default_limit` rows, as LimitOffsetPagination asks)."""
    from django.core.paginator import Paginator

    from diagnostics.api.pagination import PortalPagination
    from diagnostics.forms import WorklistFilterForm
    from diagnostics.models import Patient, User
    from diagnostics.selectors import patient_list_for_user, prediction_list_for_user, study_list_for_user
    from diagnostics.views import studies as study_views

    rows = study_views.WORKLIST_LIMIT
    navigation = study_views.STUDY_NAVIGATION_LIMIT  # how far previous/next follows the worklist order
    page = PortalPagination.default_limit
    user = User.objects.get(username="bench-clinician")
    patient = Patient.objects.filter(team_id=user.team_id).order_by("pk").first()

    def worklist(sort: str) -> Callable[[], object]:
        def call() -> object:
            filtered = WorklistFilterForm({"sort": sort}).filter(study_list_for_user(user=user))
            return list(Paginator(filtered, rows).get_page(None).object_list)

        return call

    def api_first_page(select: Callable[[], Any]) -> Callable[[], object]:
        def call() -> object:
            queryset = select()
            return queryset.count(), list(queryset[:page])

        return call

    return {
        f"worklist first page (count + {rows} rows), triage order (default)": worklist("triage"),
        f"worklist first page (count + {rows} rows), newest first": worklist("newest"),
        f"study page: previous/next (first {navigation} ids in worklist order)": lambda: list(
            WorklistFilterForm({}).filter(study_list_for_user(user=user)).values_list("pk", flat=True)[:navigation]
        ),
        "patient page: the patient's studies": lambda: list(study_list_for_user(user=user).filter(patient=patient)),
        f"API study list (count + first {page})": api_first_page(lambda: study_list_for_user(user=user)),
        f"API prediction list (count + first {page})": api_first_page(lambda: prediction_list_for_user(user=user)),
        f"API patient list (count + first {page})": api_first_page(lambda: patient_list_for_user(user=user)),
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

    from diagnostics.api.pagination import PortalPagination
    from diagnostics.models import ApiToken, Patient, Study, User
    from diagnostics.views.studies import WORKLIST_LIMIT

    page = PortalPagination.default_limit
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
        f"worklist, first page ({WORKLIST_LIMIT} rows, triage)": (web, "/"),
        "study page": (web, f"/studies/{study.pk}/"),
        "patient page": (web, f"/patients/{patient.pk}/"),
        f"API study list (first {page})": (api, "/api/v1/studies/"),
        f"API prediction list (first {page})": (api, "/api/v1/predictions/"),
        f"API patient list (first {page})": (api, "/api/v1/patients/"),
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
    from diagnostics.models import Study
    from diagnostics.views.studies import WORKLIST_LIMIT

    results: dict[str, Any] = {"runs": runs, "queries": {name: {} for name in calls}, "worklist_limit": WORKLIST_LIMIT}
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
