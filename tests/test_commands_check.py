"""``manage.py check --deploy --database default`` warns about Outposts whose servers run as
the worker's own OS user (SimpleLocalProcessSpawner)."""

from io import StringIO

import pytest
from django.core.management import call_command

from tests.factories import FlavorFactory, OutpostFactory

pytestmark = pytest.mark.django_db

BATCH = "batchspawner.SlurmSpawner"


def deploy_check(*extra: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("check", "--deploy", *extra, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_deploy_check_warns_for_each_local_process_outpost():
    # given two Outposts on SimpleLocalProcessSpawner and one on Slurm
    OutpostFactory(slug="demo", spawner_class="jupyterhub.spawner.SimpleLocalProcessSpawner")
    OutpostFactory(slug="laptop", spawner_class="jupyterhub.spawner.SimpleLocalProcessSpawner")
    OutpostFactory(slug="hpc", spawner_class=BATCH)
    # when the deployment checks run against the database
    output = deploy_check("--database", "default")
    # then each local-process Outpost is named, with what it exposes; the Slurm one is not
    assert output.count("outposts.W001") == 2
    assert "Outpost 'demo' uses jupyterhub.spawner.SimpleLocalProcessSpawner" in output
    assert "Outpost 'laptop' uses" in output
    assert "can read the worker's environment" in output
    assert "'hpc'" not in output


def test_the_check_needs_a_database_and_deploy():
    # given a local-process Outpost
    OutpostFactory(slug="demo", spawner_class="jupyterhub.spawner.SimpleLocalProcessSpawner")
    # when the checks run without --database, or without --deploy
    without_database = deploy_check()
    out = StringIO()
    call_command("check", "--database", "default", stdout=out)
    # then this check stays silent: it reads rows, and only deployments need it
    assert "outposts.W001" not in without_database
    assert "outposts.W001" not in out.getvalue()


def test_the_check_warns_about_spawner_settings_saved_before_the_rule(settings):
    # given Outposts saved without validation: a class off the allow-list, an unknown trait,
    # a flavor resource of the wrong type; and one that is fine
    settings.SPAWNER_CLASSES = ["jupyterhub.spawner.SimpleLocalProcessSpawner", BATCH]
    OutpostFactory(slug="odd", spawner_class="os.system")
    typo = OutpostFactory(slug="typo", spawner_config={"cmdd": ["jupyterhub-singleuser"]})
    FlavorFactory(outpost=typo, name="big", resources={"mem_limit": "lots"})
    OutpostFactory(slug="hpc", spawner_class=BATCH, spawner_config={"req_partition": "batch"})
    # when the checks run against the database
    output = deploy_check("--database", "default")
    # then each problem is named, with its Outpost and field; the good one is not
    assert output.count("outposts.W002") == 3
    assert "Outpost 'odd': spawner_class: 'os.system' is not an allowed spawner class" in output
    assert "Outpost 'typo': spawner_config: 'cmdd' is not a trait of Simple" in output
    assert "Outpost 'typo': flavor 'big' resources: 'mem_limit' must be an int" in output
    assert "'hpc'" not in output
