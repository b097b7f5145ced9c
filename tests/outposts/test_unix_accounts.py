"""Which Unix account a Hub user's Slurm job runs as: the Outpost's rule, its validation, and
the account a running job keeps."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from outposts.models import Outpost
from outposts.provisioning import ConfigError, config_apply
from outposts.runner.accounts import NoUnixAccount, UnixAccountRule
from outposts.runner.slurm import STATE_ACCOUNT
from outposts.runner.spawner import SpawnerRunner
from tests.factories import OutpostFactory, ServerFactory

SLURM = "batchspawner.SlurmSpawner"


@pytest.mark.parametrize(
    ("rule", "user", "account"),
    [
        (UnixAccountRule(), "olga", "olga"),
        (UnixAccountRule(rule="template", template="hpc_{name}"), "olga", "hpc_olga"),
        (UnixAccountRule(rule="table", table={"olga": "ob1234"}), "olga", "ob1234"),
    ],
)
def test_each_rule_gives_the_users_account(rule, user, account):
    assert rule.account_for(user) == account


@pytest.mark.parametrize(
    ("rule", "user"),
    [
        (UnixAccountRule(rule="table", table={"olga": "ob1234"}), "pavel"),
        # Hub user names go into `sudo -u <account>`, a shell command line.
        (UnixAccountRule(), "olga;id"),
        (UnixAccountRule(), "-olga"),
        (UnixAccountRule(rule="template", template="hpc_{name}"), "o l g a"),
        (UnixAccountRule(rule="template", template="hpc_{name}"), "x" * 40),
    ],
)
def test_a_user_without_a_plain_account_cannot_start(rule, user):
    with pytest.raises(NoUnixAccount):
        rule.account_for(user)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        (UnixAccountRule(rule="guess"), "unix_user_rule"),
        (UnixAccountRule(rule="template", template="hpc_user"), "unix_user_template"),
        (UnixAccountRule(rule="template", template="{name.__class__}"), "unix_user_template"),
        (UnixAccountRule(rule="template", template="hpc {name}"), "unix_user_template"),
        (UnixAccountRule(rule="table", table={}), "unix_user_table"),
        (UnixAccountRule(rule="table", table={"olga": "ob 1234"}), "unix_user_table"),
    ],
)
def test_a_bad_rule_is_named_by_its_field(rule, field):
    assert list(rule.errors()) == [field]


def test_the_outpost_refuses_a_mapping_for_a_spawner_that_ignores_it(db):
    # given a local-process Outpost with a template rule
    outpost = OutpostFactory.build(unix_user_rule="template", unix_user_template="hpc_{name}")
    # when / then
    with pytest.raises(ValidationError) as refused:
        outpost.full_clean()
    assert "unix_user_rule" in refused.value.message_dict
    # and a Slurm Outpost takes it
    outpost.spawner_class = SLURM
    outpost.full_clean()


def test_apply_config_sets_the_rule_and_validates_it(db):
    # when
    entry = {"slug": "hpc", "spawner_class": SLURM, "unix_user_rule": "table"}
    config_apply(data={"outposts": [{**entry, "unix_user_table": {"olga": "ob1234"}}]})
    # then
    outpost = Outpost.objects.get(slug="hpc")
    assert UnixAccountRule.from_outpost(outpost).account_for("olga") == "ob1234"
    # and a table without accounts is refused, naming the field
    with pytest.raises(ConfigError, match="unix_user_table"):
        config_apply(data={"outposts": [{**entry, "unix_user_table": {"olga": "a;b"}}]})


def test_the_job_is_submitted_as_the_mapped_account(db):
    # given a Slurm Outpost mapping olga to nobody (an account on any host)
    outpost = OutpostFactory(
        spawner_class=SLURM, unix_user_rule="table", unix_user_table={"olga": "nobody"}
    )
    server = ServerFactory(outpost=outpost, user_name="olga", status="pending")
    # when
    runner = SpawnerRunner.for_server(server)
    # then sudo runs sbatch as that account, and the server's URLs stay the Hub user's
    assert runner.spawner.req_username == "nobody"
    assert runner.unix_account == "nobody"
    assert runner.spawner.user.name == "olga"


def test_a_running_job_keeps_the_account_it_was_submitted_as(db):
    # given a job submitted as ob1234, and a rule changed since to map olga elsewhere
    outpost = OutpostFactory(
        spawner_class=SLURM, unix_user_rule="table", unix_user_table={"pavel": "nobody"}
    )
    server = ServerFactory(
        outpost=outpost,
        user_name="olga",
        spawner_state={"job_id": "17", STATE_ACCOUNT: "ob1234"},
    )
    # when the reconciler or a stop rebuilds its spawner
    runner = SpawnerRunner.for_server(server)
    # then it asks Slurm as ob1234, the only account that may cancel the job
    assert runner.spawner.req_username == "ob1234"
    assert runner.get_state()[STATE_ACCOUNT] == "ob1234"
