"""outposts.services called directly, without the API, as the admin, a management command or
another service would: the start's own rules hold for every caller."""

import pytest
from django.core.exceptions import ValidationError

from outposts.models import Server
from outposts.services import StartRequest, server_start

pytestmark = pytest.mark.django_db

NO_NAME = "JUPYTERHUB_USER (the Hub user's name) is required."
NO_ID = "JUPYTERHUB_USER_ID (the Hub user's id) is required and must be a number."


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JUPYTERHUB_USER": "ada"}, NO_ID),
        ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": ""}, NO_ID),
        ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "ada"}, NO_ID),
        ({"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "²"}, NO_ID),
        ({"JUPYTERHUB_USER_ID": "7"}, NO_NAME),
        ({}, NO_NAME),
    ],
)
def test_a_start_without_a_hub_user_or_numeric_user_id_is_refused_by_the_service(
    hub, outpost, env, message, django_capture_on_commit_callbacks
):
    # when something other than the API starts a server that names no user, or no numeric id
    with (
        django_capture_on_commit_callbacks() as queued,
        pytest.raises(ValidationError) as refused,
    ):
        server_start(hub=hub, outpost=outpost, request=StartRequest(name="lab", env=env))
    # then server_start refuses it, naming the field at fault, and writes and queues nothing
    assert refused.value.message_dict == {"env": [message]}
    assert not Server.objects.exists()
    assert queued == []


def test_a_start_naming_its_user_and_numeric_id_is_accepted_by_the_service(
    hub, outpost, django_capture_on_commit_callbacks
):
    # when a start names the Hub user and a numeric user id
    env = {"JUPYTERHUB_USER": "ada", "JUPYTERHUB_USER_ID": "7"}
    with django_capture_on_commit_callbacks() as queued:
        server, created = server_start(
            hub=hub, outpost=outpost, request=StartRequest(name="lab", env=env)
        )
    # then the server exists for that user and its start task is queued
    assert created
    assert (server.user_name, server.user_id) == ("ada", "7")
    # (outposts.dispatch queues each task as a partial of it; the admitted count is no task)
    tasks = [c.args[0].name for c in queued if isinstance(getattr(c, "args", None), tuple)]
    assert "outposts.tasks.server_start_run_task" in tasks
