"""Wait until a URL answers 200 (a systemd unit's ExecStartPost: the web unit is started once /healthz answers).

    python -m portal.wait_for_health http://127.0.0.1:8000/healthz 90

Standard library only: it runs before Django could tell anything.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def wait_for_health(url: str, timeout: float) -> bool:
    if not url.startswith(("http://", "https://")):  # no file: or custom schemes
        raise ValueError(f"{url} is not an http(s) URL.")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # nosec B310
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    return False


if __name__ == "__main__":
    target, seconds = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    if not wait_for_health(target, seconds):
        print(f"{target} did not answer 200 within {seconds:g} s", file=sys.stderr)
        sys.exit(1)
