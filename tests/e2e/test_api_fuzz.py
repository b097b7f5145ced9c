"""A bounded schemathesis run against the live portal's OpenAPI schema (issue 11, item 6).

The real portal (uvicorn, a Celery worker, beat; tests/support/portal.py) serves its schema
at /api/schema/; schemathesis reads it and sends generated requests, valid and invalid, to
every operation with a Hub's credentials, for a fixed time. The run fails on any 5xx and on
any answer the schema does not describe (status code, content type, headers, body). The
Outpost's servers are InstantSpawner's (no process each): starts go the whole way through
admission, the task and the runner without the cost of a process per generated start.

Budget: PORTAL_FUZZ_SECONDS (default 45; `make test-all`: 90) of requests, plus about 15 s to
start and stop the portal. A failure prints schemathesis's report with the request that
reproduces it (and `--seed`); PORTAL_FUZZ_SEED picks another seed to explore further.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.portal import LivePortal, local_outpost, running_portal
from tests.support.spawners import VENV_BIN

# django_db: pytest-django then sets up the test database, which the module's portal uses
# (tests/hubclient/test_e2e_hubclient.py); the portal's processes commit on their own.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

FUZZ_SECONDS = int(os.environ.get("PORTAL_FUZZ_SECONDS", "45"))
FUZZ_SEED = os.environ.get("PORTAL_FUZZ_SEED", "11")
# A 5xx, or an answer the schema does not describe. Not the checks that judge the API's
# choice of 4xx (negative_data_rejection and the like): the contract decides those.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture(scope="module")
def portal(tmp_path_factory, django_db_setup, django_db_blocker) -> Iterator[LivePortal]:
    directory = tmp_path_factory.mktemp("fuzz-portal")
    outpost = local_outpost(
        "fuzz",
        directory / "home",
        spawner_class="tests.support.spawners.InstantSpawner",
        flavors=[
            {"name": "small", "display_name": "Small", "weight": 10, "max": 50},
            {"name": "closed", "display_name": "Closed", "max": 0},
        ],
    )
    with pytest.MonkeyPatch.context() as patch:
        # Synchronous starts and stops answer within seconds: the run spends its time on
        # requests, not waits.
        patch.setenv("PORTAL_SYNC_WAIT_TIMEOUT", "3")
        with running_portal(
            directory, django_db_blocker=django_db_blocker, outposts=[outpost]
        ) as live:
            yield live


def test_fuzzing_the_live_schema_finds_no_server_error_and_no_schema_violation(
    portal: LivePortal, tmp_path
):
    # given schemathesis configured for the portal's Outpost and Hub
    (tmp_path / "schemathesis.toml").write_text('[parameters]\n"path.outpost_slug" = "fuzz"\n')
    command = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        f"{portal.url}/api/schema/",
        "--url",
        portal.url,
        "--auth",
        f"{portal.hub_name}:{portal.hub_secret}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-time",
        str(FUZZ_SECONDS),
        # One worker: with two threads, hypothesis's ast.parse of its filters sometimes fails
        # in CPython 3.11 ("AST constructor recursion depth mismatch"), a runtime error of
        # the run that is no finding about the portal.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--seed",
        FUZZ_SEED,
        "--suppress-health-check",
        "all",
        "--no-color",
    ]
    # when it runs against the live portal for its time budget
    result = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    report = result.stdout[-12000:] + result.stderr[-4000:]
    # then it found nothing
    assert result.returncode == 0, f"{report}\n{portal.logs()}"
    # and it did reach the operations, starts included (a run that tested nothing passes too)
    assert "No issues found" in result.stdout or "passed" in result.stdout, report
    from outposts.models import Server

    with portal.db_access():
        assert Server.objects.filter(outpost__slug="fuzz").exists(), report
    # and no input it sent made the portal log a traceback
    web_log = portal.processes["web"].log()
    assert "Traceback" not in web_log, web_log[-8000:]
