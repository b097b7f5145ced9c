"""A server's spawner log: what its spawner logged while it started and stopped, kept on the
row (redacted, bounded) and shown on the server's admin page (outposts/runner/logtail.py)."""

import secrets

import pytest
from django.urls import reverse

from outposts import tasks
from outposts.lifecycle import end
from outposts.models import Server
from outposts.runner.logtail import TAIL_LINES, SpawnerLogTail, redact
from outposts.runner.spawner import SpawnerRunner
from tests.factories import ServerFactory
from tests.support.hub import FakeHub
from tests.support.spawners import serve_config

TOKEN = secrets.token_hex(16)


def env_of(user: str) -> dict:
    hub = FakeHub.__new__(FakeHub)
    hub.url = "http://127.0.0.1:9"  # nothing listens: Hub calls are not under test here
    return hub.env(user, token=TOKEN)


def test_tokens_and_the_secrets_it_knows_are_redacted():
    # when lines with secrets are redacted
    known = redact("sbatch env has my-own-secret-value in it", secrets=["my-own-secret-value"])
    assigned = redact("JUPYTERHUB_API_TOKEN=abc123 password: 'hunter22' Authorization: token xyz")
    bare = redact(f"curl with {TOKEN} and a Fernet gAAAAABlZ2VuZXJhdGVkX2tleV9mb3JfdGVzdHNfb25seQ")
    # then none of them is left, and the rest of the line is
    assert known == "sbatch env has [redacted] in it"
    assert assigned == (
        "JUPYTERHUB_API_TOKEN=[redacted] password: '[redacted]' Authorization: token [redacted]"
    )
    assert bare == "curl with [redacted] and a Fernet [redacted]"


def test_a_tail_keeps_the_last_lines_one_line_each():
    # given a tail that was given more lines than it keeps, one of them with a line break
    tail = SpawnerLogTail()
    for n in range(TAIL_LINES + 5):
        tail.add(f"line {n}\nforged line")
    # then it has the last ones, each on one line
    lines = tail.text().splitlines()
    assert len(lines) == TAIL_LINES
    assert lines[-1] == f"line {TAIL_LINES + 4} forged line"


@pytest.mark.django_db
def test_each_runner_keeps_what_its_own_spawner_logged_at_info_and_above(home):
    # given two servers' runners
    first, second = (
        SpawnerRunner.for_server(
            ServerFactory(
                user_name=name, env=env_of(name), outpost__spawner_config=serve_config(home)
            )
        )
        for name in ("olga", "piet")
    )
    # when their spawners log, one of them its env at DEBUG (as batchspawner does) and a token
    first.spawner.log.info("submitting for olga with token %s", TOKEN)
    first.spawner.log.debug("env: %s", first.spawner.get_env())
    second.spawner.log.warning("piet's job is pending")
    # then each tail has its own spawner's lines at INFO and above, without the token
    assert first.log_tail.text().endswith("INFO submitting for olga with token [redacted]")
    assert TOKEN not in first.log_tail.text()
    assert "env:" not in first.log_tail.text()
    assert second.log_tail.text().endswith("WARNING piet's job is pending")
    assert "olga" not in second.log_tail.text()


@pytest.mark.django_db
def test_the_server_page_shows_the_error_and_the_spawner_log(
    client, site_admin, two_outposts, home
):
    # given a server of the site admin's Outpost whose start failed: its command does not exist
    mine, _ = two_outposts
    mine.spawner_config = serve_config(home, cmd=["/no/such/<b>cmd"])
    mine.save()
    server = ServerFactory(
        outpost=mine, name="", user_name="olga", env=env_of("olga"), status=Server.Status.REQUESTED
    )
    tasks.server_start_run_task(server.pk)
    # when they open the server's page
    page = client.get(reverse("admin:outposts_server_change", args=[server.pk]))
    # then it shows the error the user got and, below it, what the spawner logged and raised,
    # escaped
    assert page.status_code == 200
    html = page.content.decode()
    assert "The server could not be started (FileNotFoundError)" in html
    assert '<pre class="spawner-log">' in html
    assert "INFO Spawning &#x27;/no/such/&lt;b&gt;cmd&#x27;" in html
    assert (
        "ERROR The start failed: FileNotFoundError: [Errno 2] No such file or directory: "
        "&#x27;/no/such/&lt;b&gt;cmd&#x27;" in html
    )
    assert "<b>cmd" not in html


@pytest.mark.django_db
def test_a_start_and_its_stop_both_add_to_the_log(home, killer):
    # given a server that started
    server = ServerFactory(
        outpost__spawner_config=serve_config(home),
        name="",
        user_name="olga",
        env=env_of("olga"),
        status=Server.Status.REQUESTED,
    )
    tasks.server_start_run_task(server.pk)
    server.refresh_from_db()
    assert server.status == Server.Status.RUNNING, server.error
    killer.append(server.spawner_state["pid"])
    started = server.spawner_log.splitlines()
    # when it is stopped by a spawner that cannot stop it (its state names no process)
    Server.objects.filter(pk=server.pk).update(
        status=Server.Status.STOPPING, spawner_state={"pid": "not a pid"}
    )
    with pytest.raises(Exception, match="Could not stop server"):
        end.server_stop_run(server_id=server.pk)
    # then the stop's error follows the start's lines
    server.refresh_from_db()
    lines = server.spawner_log.splitlines()
    assert lines[: len(started)] == started
    assert "INFO Spawning " in started[0]
    assert "ERROR The stop failed:" in lines[-1]
