"""`python -m tests.integration.fake_clock_control OFFSET_S`: the control worker as
`callcharge control` runs it, on a clock shifted by OFFSET_S seconds (the expiry tests'
fake clock). The clock is injected through `pipeline.wiring`; production settings have no
clock hook."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from pipeline import wiring
from pipeline.config import Settings


def main(offset_s: float) -> None:
    settings = Settings.from_env()
    app = wiring.control_app(settings, clock=lambda: datetime.now(UTC) + timedelta(seconds=offset_s))
    sys.argv = ["callcharge-control", "worker", "--loglevel", "info"]
    app.main()


if __name__ == "__main__":
    main(float(sys.argv[1]))
