"""The pure parts of the Slurm backend: time limits, progress texts, job-script options."""

from __future__ import annotations

import pytest

from outposts.runner.checks import UnsafeName
from outposts.runner.slurm import job_script_options, pending_message, slurm_time


@pytest.mark.parametrize(
    ("seconds", "limit"),
    [(30, "0-00:01:00"), (3600, "0-01:00:00"), (3601, "0-01:01:00"), (90000, "1-01:00:00")],
)
def test_a_runtime_becomes_slurms_time_limit_in_whole_minutes_up(seconds, limit):
    assert slurm_time(seconds) == limit


@pytest.mark.parametrize(
    ("seen", "message"),
    [
        (
            ("PENDING", "Priority", "2026-12-01T15:43:23"),
            "Slurm job 17 is pending (Priority: jobs with a higher priority go first); "
            "expected start 2026-12-01 15:43:23.",
        ),
        (
            ("PENDING", "AssocGrpGRES", "N/A"),
            "Slurm job 17 is pending (AssocGrpGRES); no expected start time yet.",
        ),
        (("PENDING", "None", "N/A"), "Slurm job 17 is pending; no expected start time yet."),
        (("CONFIGURING", "None", "N/A"), "Slurm job 17 is configuring."),
    ],
)
def test_what_a_waiting_user_reads(seen, message):
    assert pending_message("17", *seen) == message


def test_options_the_flavor_or_the_portal_decides_never_reach_the_script():
    kept, dropped = job_script_options(
        {"partition": "big", "account": "p1", "memory": "1T", "cmd": "sh", "qos": "high"},
        fixed={"partition"},
    )
    assert kept == {"account": "p1", "qos": "high"}
    assert sorted(dropped) == ["cmd", "memory", "partition"]


@pytest.mark.parametrize("value", [True, None, ["a"], "a b", "a\nb", "`id`", "-x"])
def test_an_option_value_must_be_one_plain_word(value):
    with pytest.raises(UnsafeName):
        job_script_options({"account": value}, fixed=set())
