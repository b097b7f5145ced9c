"""Servers as jobs of a real single-node Slurm (tests/support/slurm.py), through admission, the
start task's lifecycle and the reconciler, with the ordinary batchspawner.SlurmSpawner.

The jobs run as the Unix accounts the Outpost's rule maps the Hub users to (``hpc_{name}``).
What a started job needs to become *ready* (the server reporting its address through the
portal's call-back) is another part of the portal: here a job either waits in the queue or
runs a command without it, except one test, whose job runs jupyterhub-singleuser through
outpost-start-server and reports through the portal's real call-back.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.db import connection

from outposts import services
from outposts.lifecycle.end import server_stop_run
from outposts.lifecycle.reconcile import outpost_reconcile
from outposts.lifecycle.start import server_start_run
from outposts.models import Server, SpawnEvent
from outposts.runner import slurm as slurm_backend
from outposts.services import StartRequest
from tests.factories import HUB_SECRET, FlavorFactory, HubFactory, OutpostFactory, ServerFactory
from tests.support.processes import json_if_up, wait_until
from tests.support.slurm import NODE_CPUS, NODE_MEMORY_MB, SlurmCluster

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The default SlurmSpawner script, plus the lines a site adds for the allow-listed options
# account and project (the stock script has none).
BATCH_SCRIPT = """#!/bin/bash
#SBATCH --output={{homedir}}/jupyterhub_slurmspawner_%j.log
#SBATCH --job-name=spawner-jupyterhub
#SBATCH --chdir={{homedir}}
#SBATCH --export={{keepvars}}
{% if partition  %}#SBATCH --partition={{partition}}
{% endif %}{% if runtime    %}#SBATCH --time={{runtime}}
{% endif %}{% if memory     %}#SBATCH --mem={{memory}}
{% endif %}{% if nprocs     %}#SBATCH --cpus-per-task={{nprocs}}
{% endif %}{% if account    %}#SBATCH --account={{account}}
{% endif %}{% if project    %}#SBATCH --comment=project:{{project}}
{% endif %}
set -euo pipefail
{% if srun %}{{srun}} {% endif %}{{cmd}}
"""


def slurm_config(cluster: SlurmCluster, **traits) -> dict:
    """SlurmSpawner's traits for this cluster: absolute paths (sudo resets PATH), SLURM_CONF
    through the spawner's environment, and a job command of the tests."""
    return {
        "environment": cluster.env,
        "batch_script": BATCH_SCRIPT,
        "batch_submit_cmd": "/usr/bin/sbatch --parsable",
        "batch_query_cmd": "/usr/bin/squeue -h -j {job_id} -o '%T %B'",
        "batch_cancel_cmd": "/usr/bin/scancel {job_id}",
        "batchspawner_singleuser_cmd": str(cluster.programs / "job-wrapper"),
        "cmd": ["/bin/sleep", "600"],
        "req_srun": "",
        **traits,
    }


@pytest.fixture
def site(slurm_cluster, settings, tmp_path, monkeypatch):
    """A Slurm Outpost mapping Hub users to hpc_<name>, its flavors and a Hub; every job
    still queued is cancelled at teardown."""
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    monkeypatch.setattr(slurm_backend, "PROGRESS_INTERVAL", 0.5)
    outpost = OutpostFactory(
        slug=f"slurm-{uuid.uuid4().hex[:6]}",
        spawner_class="batchspawner.SlurmSpawner",
        spawner_config=slurm_config(slurm_cluster),
        allowed_user_options=["account", "project", "partition"],
        unix_user_rule="template",
        unix_user_template="hpc_{name}",
        start_timeout=timedelta(minutes=3),
    )
    FlavorFactory(
        outpost=outpost,
        name="small",
        runtime=timedelta(hours=1),
        resources={"req_nprocs": "1", "req_memory": "500M"},
    )
    FlavorFactory(
        outpost=outpost,
        name="pinned",
        runtime=timedelta(minutes=30),
        resources={"req_nprocs": "1", "req_memory": "200M", "req_partition": "debug"},
    )
    FlavorFactory(
        outpost=outpost,
        name="too-long",
        runtime=timedelta(hours=1),  # the "short" partition allows 10 minutes
        resources={"req_nprocs": "1", "req_memory": "200M", "req_partition": "short"},
    )
    hub = HubFactory(outposts=[outpost])
    yield {"outpost": outpost, "hub": hub, "cluster": slurm_cluster}
    slurm_cluster.cancel_all()
    wait_until(lambda: not slurm_cluster.job_ids(), timeout=30, what="no job left in squeue")


def admit(site, *, user="olga", name="lab", flavor="small", env=None, **options) -> Server:
    """A start as the API admits it (flavor resolved and frozen, options stored)."""
    request = StartRequest(
        name=name,
        env={"JUPYTERHUB_USER": user, "JUPYTERHUB_USER_ID": "7", **(env or {})},
        flavor=flavor,
        user_options={"flavor": flavor, **options},
    )
    server, _ = services.server_start(hub=site["hub"], outpost=site["outpost"], request=request)
    return server


@pytest.fixture
def in_background() -> Iterator[Callable[[Server], threading.Thread]]:
    """Run a server's start task in a thread (it waits for a job that never reports a port);
    the test stops the server; teardown stops those a failed test left, and waits for the
    threads to end."""
    started: list[tuple[Server, threading.Thread]] = []

    def run(server: Server) -> threading.Thread:
        def target() -> None:
            try:
                server_start_run(server_id=server.pk)
            finally:
                connection.close()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        started.append((server, thread))
        return thread

    yield run
    for server, thread in started:
        if thread.is_alive():
            services.server_stop(server=server)
        thread.join(timeout=60)
        assert not thread.is_alive(), "a start task did not end"


def job_of(server: Server) -> str:
    """The Slurm job id the start task saved in the server's state (its heartbeat)."""

    def saved() -> str:
        server.refresh_from_db()
        return (server.spawner_state or {}).get("job_id", "")

    return wait_until(saved, timeout=60, what="the job id in the server's state")


def stop_and_wait(server: Server, thread: threading.Thread) -> Server:
    services.server_stop(server=server)
    thread.join(timeout=60)
    server.refresh_from_db()
    return server


def messages(server: Server) -> list[str]:
    return list(SpawnEvent.objects.filter(server=server).values_list("message", flat=True))


def test_a_start_is_a_job_of_the_mapped_user_with_the_flavors_limits(site, in_background):
    # given a start of olga's with the small flavor and the allow-listed options
    server = admit(site, account="proj42", project="p-17", partition="short")
    # when the start task runs it
    thread = in_background(server)
    job_id = job_of(server)
    # then Slurm runs the job as hpc_olga with the flavor's time, CPUs and memory, and the
    # options where the flavor sets nothing (the partition; account and project)
    job = wait_until(lambda: site["cluster"].job(job_id), what="scontrol to show the job")
    assert job["UserId"].startswith("hpc_olga(")
    assert job["TimeLimit"] == "01:00:00"
    assert job["NumCPUs"] == "1"
    assert job["MinMemoryNode"] == "500M"
    assert job["Partition"] == "short"
    assert job["Account"] == "proj42"
    assert job["Comment"] == "project:p-17"
    assert (server.spawner_state or {})[slurm_backend.STATE_ACCOUNT] == "hpc_olga"
    # and a stop while the portal still waits for the server cancels the job
    server = stop_and_wait(server, thread)
    assert server.status == Server.Status.STOPPED
    wait_until(lambda: job_id not in site["cluster"].job_ids(), what="the job to leave squeue")


def test_a_hub_cannot_choose_a_partition_the_flavor_sets_nor_a_bigger_job(site, in_background):
    # given a start of the flavor pinned to "debug", asking for "short" and for 2 CPUs
    server = admit(site, flavor="pinned", partition="short", nprocs="2", runtime="99-0")
    # when
    thread = in_background(server)
    job = wait_until(lambda: site["cluster"].job(job_of(server)), what="the job")
    # then the flavor's partition, CPUs and runtime hold
    assert job["Partition"] == "debug"
    assert job["NumCPUs"] == "1"
    assert job["TimeLimit"] == "00:30:00"
    stop_and_wait(server, thread)


def test_slurm_and_shell_variables_of_the_request_never_reach_sbatch(site, in_background, tmp_path):
    # given a request env that would lift the time limit, move the job, preload a library
    # and put its own "sudo" first on the PATH of the shell that runs sbatch as root
    bin_dir = tmp_path / "evil-bin"
    bin_dir.mkdir()
    marker = tmp_path / "evil-ran"
    (bin_dir / "sudo").write_text(f'#!/bin/sh\ntouch {marker}\nexec /usr/bin/sudo "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    server = admit(
        site,
        env={
            "SBATCH_TIMELIMIT": "5-00:00:00",
            "SBATCH_PARTITION": "short",
            "SLURM_CONF": "/nonexistent/slurm.conf",
            "LD_PRELOAD": "/nonexistent/evil.so",
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "JUPYTER_THEME": "dark",
            "NOTEBOOK_THEME": "dark",  # not JUPYTER*/JUPYTERHUB* nor allow-listed: dropped
        },
    )
    # when
    thread = in_background(server)
    job_id = job_of(server)
    job = wait_until(lambda: site["cluster"].job(job_id), what="the job")
    # then the job has the flavor's time in the default partition, sbatch ran from the real
    # sudo, and the job's environment has the allowed variable only
    assert job["TimeLimit"] == "01:00:00"
    assert job["Partition"] == "debug"
    assert not marker.exists()
    env_file = Path(f"/home/hpc_olga/outpost-job-{job_id}.env")
    job_env = wait_until(lambda: env_file.exists() and env_file.read_text(), what="job env")
    assert "JUPYTER_THEME=dark" in job_env
    for name in ("SBATCH_TIMELIMIT", "SBATCH_PARTITION", "LD_PRELOAD", str(bin_dir), "NOTEBOOK_"):
        assert name not in job_env
    stop_and_wait(server, thread)


def test_a_pending_job_shows_its_reason_and_expected_start_and_a_cancel_removes_it(
    site, in_background
):
    # given the node's CPUs taken by another user's job with a known end
    cluster = site["cluster"]
    blocker = cluster.run(
        "sbatch",
        "--parsable",
        "--uid=hpc_pavel",
        f"-c{NODE_CPUS}",
        "--time=5",
        "--chdir=/tmp",
        "--output=/dev/null",
        "--wrap",
        "sleep 300",
    ).stdout.strip()
    wait_until(lambda: cluster.job(blocker).get("JobState") == "RUNNING", what="the blocker")
    # when olga starts a server
    server = admit(site)
    thread = in_background(server)
    job_id = job_of(server)
    # then she reads that her job waits for resources, and when it is expected to start
    pending = wait_until(
        lambda: [m for m in messages(server) if "(Resources: " in m and "expected start 2" in m],
        what="a progress event with the reason and the expected start",
        details=lambda: "\n".join(messages(server)),
    )
    assert pending[0].startswith(f"Slurm job {job_id} is pending (Resources: waiting for free")
    # and when the reason changes (held), a new event says so
    cluster.run("scontrol", "uhold", job_id)
    wait_until(
        lambda: any("(JobHeldUser: held by its user)" in m for m in messages(server)),
        what="a progress event for the hold",
        details=lambda: "\n".join(messages(server)),
    )
    # and a stop while pending cancels the job: squeue no longer lists it
    server = stop_and_wait(server, thread)
    assert server.status == Server.Status.STOPPED
    wait_until(lambda: job_id not in cluster.job_ids(), what="the job to leave squeue")
    assert messages(server).count(pending[0]) == 1  # once per change, not every poll


def test_a_job_slurm_refuses_fails_the_start_with_slurms_reason(site):
    # given a flavor asking for more memory than any node has (too many CPUs would pend,
    # with reason PartitionConfig)
    FlavorFactory(
        outpost=site["outpost"],
        name="huge",
        runtime=timedelta(hours=1),
        resources={"req_memory": f"{NODE_MEMORY_MB * 4}M"},
    )
    server = admit(site, flavor="huge")
    # when the start task runs it
    server_start_run(server_id=server.pk)
    # then the start fails with Slurm's reason, which the Hub shows the user
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert server.error.startswith("Slurm refused the job: ")
    assert "node configuration is not available" in server.error
    assert not site["cluster"].job_ids()


def test_a_job_that_ends_before_its_server_reports_fails_the_start_at_once(site, in_background):
    # given an Outpost whose servers report their address, with an hour to start, and a job
    # whose command runs a while, then ends without ever reporting
    outpost = site["outpost"]
    outpost.spawner_config = {**outpost.spawner_config, "cmd": ["/bin/sleep", "10"]}
    outpost.server_reports_address = True
    outpost.server_callback_url = "http://127.0.0.1:9"  # never called: the job ends first
    outpost.allowed_node_patterns = [socket.gethostname()]
    outpost.start_timeout = timedelta(hours=1)
    outpost.full_clean()
    outpost.save()
    server = admit(site)
    # when the start task runs it
    thread = in_background(server)
    # then the start fails once the job has ended, long before the start timeout
    thread.join(timeout=180)
    assert not thread.is_alive(), "the start still waits for a job that ended"
    server.refresh_from_db()
    assert server.status == Server.Status.FAILED
    assert "before it reported its address" in server.error
    assert not site["cluster"].job_ids()


def running_server(site, cluster: SlurmCluster, **config) -> tuple[Server, str]:
    """A RUNNING server whose job is a real job of hpc_olga's (as a start leaves it)."""
    if config:
        site["outpost"].spawner_config = {**site["outpost"].spawner_config, **config}
        site["outpost"].save()
    job_id = cluster.run(
        "sbatch",
        "--parsable",
        "--uid=hpc_olga",
        "--time=5",
        "--chdir=/tmp",
        "--output=/dev/null",
        "--wrap",
        "sleep 300",
    ).stdout.strip()
    wait_until(lambda: cluster.job(job_id).get("JobState") == "RUNNING", what="the job")
    server = ServerFactory(
        hub=site["hub"],
        outpost=site["outpost"],
        flavor=site["outpost"].flavors.get(name="small"),
        user_name="olga",
        status=Server.Status.RUNNING,
        spawner_state={"job_id": job_id, slurm_backend.STATE_ACCOUNT: "hpc_olga"},
    )
    Server.objects.filter(pk=server.pk).update(last_poll_at=None)
    return server, job_id


def reconcile(server: Server) -> Server:
    Server.objects.filter(pk=server.pk).update(last_poll_at=None)
    outpost_reconcile(outpost_id=server.outpost_id)
    server.refresh_from_db()
    return server


def test_stopping_a_running_server_cancels_its_job(site):
    # given a running server's job
    cluster = site["cluster"]
    server, job_id = running_server(site, cluster)
    # when the Hub stops it and the stop task runs
    services.server_stop(server=server)
    server_stop_run(server_id=server.pk)
    # then its job is gone and the server stopped
    server.refresh_from_db()
    assert server.status == Server.Status.STOPPED
    wait_until(lambda: job_id not in cluster.job_ids(), what="the job to leave squeue")


def test_the_reconciler_sees_a_job_cancelled_from_outside_as_stopped(site):
    # given a running server's job
    cluster = site["cluster"]
    server, job_id = running_server(site, cluster)
    assert reconcile(server).status == Server.Status.RUNNING
    # when an administrator cancels it
    cluster.run("scancel", job_id)
    # then the next round ends the server as stopped
    server = wait_until(
        lambda: (s := reconcile(server)).status == Server.Status.STOPPED and s,
        what="the server to be stopped",
    )
    assert server.poll_status == 1


def test_a_job_slurm_forgot_is_stopped(site):
    # given a running server whose job Slurm never knew (purged long ago)
    cluster = site["cluster"]
    server, job_id = running_server(site, cluster)
    Server.objects.filter(pk=server.pk).update(
        spawner_state={"job_id": "987654", slurm_backend.STATE_ACCOUNT: "hpc_olga"}
    )
    # when / then
    assert reconcile(server).status == Server.Status.STOPPED


def test_a_failing_squeue_marks_the_server_unknown_not_stopped(site, monkeypatch):
    # given a site's squeue wrapper that fails while a flag file exists (a controller
    # restart, an LDAP hiccup), and a running server; in the cluster's folder, which the
    # job's user can read
    folder = site["cluster"].folder
    flag = folder / f"squeue-down-{uuid.uuid4().hex[:6]}"
    wrapper = folder / f"squeue-{uuid.uuid4().hex[:6]}"
    # (written where the user may write; read back by root)
    seen_env = Path(f"/tmp/outpost-squeue-env-{uuid.uuid4().hex[:8]}")
    wrapper.write_text(
        f"#!/bin/sh\nenv > {seen_env}\n"
        f"if [ -e {flag} ]; then echo 'squeue: error: no answer' >&2; exit 1; fi\n"
        'exec /usr/bin/squeue "$@"\n'
    )
    # a secret of the worker's (its database URL, its keys)
    monkeypatch.setenv("PORTAL_TEST_SECRET", "s3cret-of-the-worker")
    wrapper.chmod(0o755)
    cluster = site["cluster"]
    server, job_id = running_server(
        site, cluster, batch_query_cmd=f"{wrapper} -h -j {{job_id}} -o '%T %B'"
    )
    flag.touch()
    # when the reconciler polls it
    server = reconcile(server)
    # then the server is unknown, its job untouched
    assert server.status == Server.Status.UNKNOWN
    assert cluster.job(job_id)["JobState"] == "RUNNING"
    # and once squeue answers again it is running again
    flag.unlink()
    assert reconcile(server).status == Server.Status.RUNNING
    # and squeue, run as the user (who can read its environment), got the Outpost's
    # SLURM_CONF but nothing of the worker's secrets
    env_text = seen_env.read_text()
    seen_env.unlink()
    assert f"SLURM_CONF={cluster.conf}" in env_text
    assert "s3cret-of-the-worker" not in env_text


def job_python_path() -> str:
    """Where the job's Python finds jupyterhub: the portal's own site-packages. The jobs run
    Debian's python3 (the same 3.11 as the venv), since the venv's interpreter may lie under a
    home the job's user cannot read."""
    site_packages = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    readable = subprocess.run(
        ["sudo", "-u", "hpc_olga", "test", "-r", str(site_packages / "jupyterhub" / "__init__.py")],
        check=False,
    )
    if readable.returncode != 0:
        pytest.skip(f"{site_packages} is not readable by the test's job user")
    return str(site_packages)


def test_a_start_through_the_api_runs_jupyter_in_a_job_reached_at_its_reported_address(
    site, celery_worker, portal_web, fake_hub
):
    # given a Slurm Outpost whose jobs run jupyterhub-singleuser through outpost-start-server,
    # which reports the job's address to the portal's call-back
    outpost, hub, cluster = site["outpost"], site["hub"], site["cluster"]
    outpost.spawner_config = slurm_config(
        cluster,
        batchspawner_singleuser_cmd=(
            f"{cluster.programs / 'job-wrapper'} /usr/bin/python3 "
            f"{cluster.programs / 'outpost_start_server.py'} --"
        ),
        # sudo drops PYTHONPATH from what it passes on: the command sets it itself.
        cmd=["/usr/bin/env", f"PYTHONPATH={job_python_path()}", "/usr/bin/python3", "-m"]
        + ["jupyterhub.singleuser"],
    )
    outpost.server_reports_address = True
    outpost.server_callback_url = portal_web
    # The job listens on all interfaces and reports its node's name, as on a real cluster.
    node = socket.gethostname()
    outpost.allowed_node_patterns = [node]
    outpost.allowed_port_min, outpost.allowed_port_max = 23000, 23999
    outpost.full_clean()
    outpost.save()
    celery_worker(outpost.celery_queue)
    base = f"{portal_web}/outposts/{outpost.slug}/services"
    auth = base64.b64encode(f"{hub.name}:{HUB_SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}
    body = {
        "name": "lab",
        "env": fake_hub.env("olga", "lab"),
        "user_options": {"start_id": "j1", "flavor": "small"},
        "misc": {},
    }
    # when a stock Hub starts olga's server, waiting for the answer
    answer = requests.post(base, json=body, headers=headers, timeout=240)
    # then the answer is the address the job reported, a port of the Outpost's range
    assert answer.status_code == 200, answer.text
    address = answer.json()["service"]
    server = Server.objects.get(outpost=outpost, name="lab", start_id="j1")
    assert address == server.address == server.reported_address, server.error
    host, port = address.rsplit(":", 1)
    assert host == node and 23000 <= int(port) <= 23999
    # and it is a Slurm job of olga's mapped account, in which Jupyter answers over HTTP
    job_id = job_of(server)
    assert cluster.job(job_id)["UserId"].startswith("hpc_olga(")
    status = wait_until(lambda: json_if_up(f"http://{address}/user/olga/lab/api"), timeout=60)
    assert "version" in status
    assert "The server reported its address" in " ".join(messages(server))
    # when the Hub deletes it, the job is gone from the queue
    stop = requests.delete(f"{base}/lab/j1", headers=headers, timeout=60)
    assert stop.status_code == 200, stop.text
    wait_until(lambda: job_id not in cluster.job_ids(), timeout=60, what="the job to go")


def test_through_the_api_a_job_held_by_its_partition_shows_why_and_a_delete_cancels_it(
    site, celery_worker, portal_web, fake_hub
):
    # given the portal's web server and a worker for the Slurm Outpost
    outpost, hub, cluster = site["outpost"], site["hub"], site["cluster"]
    celery_worker(outpost.celery_queue)
    base = f"{portal_web}/outposts/{outpost.slug}/services"
    auth = base64.b64encode(f"{hub.name}:{HUB_SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}", "execution-type": "async"}
    # when the Hub starts olga's server with a flavor longer than its partition allows
    body = {
        "name": "lab",
        "env": fake_hub.env("olga", "lab"),
        "user_options": {"start_id": "s1", "flavor": "too-long"},
        "misc": {"port": 51285, "ip": "0.0.0.0"},
    }
    answer = requests.post(base, json=body, headers=headers, timeout=30)
    assert (answer.status_code, answer.json()) == (202, {"service": ""})
    # then the Hub shows her why the job waits
    server = Server.objects.get(outpost=outpost, name="lab", start_id="s1")
    job_id = job_of(server)
    assert cluster.job(job_id)["UserId"].startswith("hpc_olga(")
    event = wait_until(
        lambda: [
            call.body["message"]
            for call in fake_hub.posts("/users/progress/events/olga/lab")
            if "PartitionTimeLimit" in call.body["message"]
        ],
        timeout=60,
        what="the pending reason at the Hub",
    )[0]
    assert event.startswith(f"Slurm job {job_id} is pending (PartitionTimeLimit: ")
    poll = requests.get(f"{base}/lab/s1", headers=headers, timeout=10)
    assert poll.json() == {"status": None, "logs": []}
    # when the Hub deletes the server while its job waits
    stop = requests.delete(f"{base}/lab/s1", headers=headers, timeout=30)
    assert stop.status_code == 202
    # then the job is gone from the queue and the server stopped
    wait_until(lambda: job_id not in cluster.job_ids(), timeout=60, what="the job to go")
    wait_until(
        lambda: Server.objects.get(pk=server.pk).status == Server.Status.STOPPED,
        timeout=60,
        what="the server to be stopped",
    )
