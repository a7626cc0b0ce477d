"""Benchmarks of the whole portal on this machine; `make bench` runs them all.

- `benchmarks.model_latency` (``python -m benchmarks.model_latency``): each model's latency and throughput on
  this CPU, the GEMM ceiling, JPEG decoding, int8 variants;
- `benchmarks.serving`: upload-to-stored-prediction latency with a real gunicorn, Celery worker,
  Redis and PostgreSQL;
- `benchmarks.loadtest`: pages and API under 1, 10 and 50 concurrent clients with 10,000 studies;
- `benchmarks.report`: writes docs/performance.md and its plot from the results (never by hand).

Everything runs on 127.0.0.1 against its own database (`portal_bench`), Redis database and media
folder under var/bench, so it never touches a developer's or the tests' data.
"""
