"""The operator's commands: apply_config, generate_secrets, rotate_encryption_keys."""

from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from flavors.models import Flavor
from flavors.selectors import flavor_resolution
from outposts.models import Hub, Outpost, Server
from tests.factories import FlavorFactory, HubFactory, OutpostFactory, ServerFactory

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
outposts:
  - slug: local
    name: Local processes
    default: true
    spawner_class: jupyterhub.spawner.SimpleLocalProcessSpawner
    spawner_config: {cmd: [jupyterhub-singleuser], args: [--allow-root]}
    allowed_overrides: [default_url]
    allowed_user_options: [partition]
    min_system_uid: 5000
    max_servers_per_user: 3
    poll_interval: 10
    start_timeout: 120
    flavors:
      - {name: small, display_name: "1 CPU", description: "For trying", weight: 10,
         max: 5, max_per_user: 2, runtime: {hours: 2}, resources: {mem_limit: 2G}}
      - {name: big, display_name: "4 CPUs", runtime: {minutes: 30}}
hubs:
  - {name: hub1, secret: change-me, outposts: [local],
     callback_url_prefixes: ["https://hub1.example.org/hub/api/"]}
  - {name: hub2, secret_env: HUB2_SECRET, outposts: [local]}
"""


def apply(text: str, tmp_path: Path, *extra: str) -> str:
    path = tmp_path / "portal.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), *extra, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def hub2_secret(monkeypatch):
    monkeypatch.setenv("HUB2_SECRET", "from-the-environment")


def test_apply_config_creates_outposts_flavors_and_hubs(tmp_path):
    # when the example configuration is applied
    out = apply(CONFIG, tmp_path)
    # then the Outpost, its flavors and the Hubs exist as written
    outpost = Outpost.objects.get(slug="local")
    assert outpost.name == "Local processes"
    assert outpost.is_default
    assert outpost.spawner_config == {"cmd": ["jupyterhub-singleuser"], "args": ["--allow-root"]}
    assert outpost.allowed_overrides == ["default_url"]
    assert (outpost.allowed_user_options, outpost.min_system_uid) == (["partition"], 5000)
    assert outpost.poll_interval == timedelta(seconds=10)
    assert outpost.start_timeout == timedelta(minutes=2)
    small = Flavor.objects.get(outpost=outpost, name="small")
    assert (small.display_name, small.weight, small.max, small.max_per_user) == ("1 CPU", 10, 5, 2)
    assert small.runtime == timedelta(hours=2)
    assert small.resources == {"mem_limit": "2G"}
    assert Flavor.objects.get(outpost=outpost, name="big").runtime == timedelta(minutes=30)
    hub1 = Hub.objects.get(name="hub1")
    assert hub1.check_secret("change-me")
    assert hub1.callback_url_prefixes == ["https://hub1.example.org/hub/api/"]
    hub2 = Hub.objects.get(name="hub2")
    assert hub2.callback_url_prefixes == []
    assert hub2.check_secret("from-the-environment")
    assert list(hub2.outposts.all()) == [outpost]
    assert "created Outpost 'local'" in out
    assert "created Hub 'hub2'" in out


def test_apply_config_twice_changes_nothing(tmp_path):
    # given the configuration applied once
    apply(CONFIG, tmp_path)
    # when it is applied again
    out = apply(CONFIG, tmp_path)
    # then everything is reported unchanged
    assert "created" not in out and "updated" not in out
    assert "unchanged Outpost 'local'" in out
    assert "unchanged Outpost 'local' flavor 'small'" in out
    assert "unchanged Hub 'hub1'" in out
    assert Flavor.objects.count() == 2 and Hub.objects.count() == 2


def test_apply_config_updates_what_changed(tmp_path):
    # given the configuration applied once
    apply(CONFIG, tmp_path)
    # when the small flavor's max and the Outpost's name change
    out = apply(CONFIG.replace("max: 5", "max: 7").replace("Local processes", "Local"), tmp_path)
    # then exactly those are updated
    assert Flavor.objects.get(name="small").max == 7
    assert Outpost.objects.get(slug="local").name == "Local"
    assert "updated Outpost 'local' flavor 'small'" in out
    assert "unchanged Outpost 'local' flavor 'big'" in out


def test_new_security_fields_update_and_take_their_defaults(tmp_path):
    # given the configuration applied once
    apply(CONFIG, tmp_path)
    # when the uid check is switched off, the allow-list and the Hub's prefixes changed
    data = yaml.safe_load(CONFIG)
    data["outposts"][0].update(min_system_uid=None, allowed_user_options=["partition", "nodes"])
    data["hubs"][0]["callback_url_prefixes"] = ["https://hub1.example.org/"]
    out = apply(yaml.safe_dump(data), tmp_path)
    outpost = Outpost.objects.get(slug="local")
    # then they are updated
    assert (outpost.min_system_uid, outpost.allowed_user_options) == (None, ["partition", "nodes"])
    assert Hub.objects.get(name="hub1").callback_url_prefixes == ["https://hub1.example.org/"]
    assert "updated Outpost 'local'" in out and "updated Hub 'hub1'" in out
    # and when they are left out of the file, they take the models' defaults
    for key in ("min_system_uid", "allowed_user_options"):
        del data["outposts"][0][key]
    del data["hubs"][0]["callback_url_prefixes"]
    apply(yaml.safe_dump(data), tmp_path)
    outpost.refresh_from_db()
    assert (outpost.min_system_uid, outpost.allowed_user_options) == (1000, [])
    assert Hub.objects.get(name="hub1").callback_url_prefixes == []


def test_flavor_removed_from_file_is_deleted_or_closed_if_used(tmp_path):
    # given both flavors, the big one used by a stopped server
    apply(CONFIG, tmp_path)
    big = Flavor.objects.get(name="big")
    ServerFactory(outpost=big.outpost, flavor=big, status=Server.Status.STOPPED)
    # when a file without either flavor is applied
    data = yaml.safe_load(CONFIG)
    data["outposts"][0]["flavors"] = []
    out = apply(yaml.safe_dump(data), tmp_path)
    # then the unused one is deleted, the used one kept but closed
    assert not Flavor.objects.filter(name="small").exists()
    big.refresh_from_db()
    assert big.max == 0
    assert "deleted Outpost 'local' flavor 'small' (not in the file, never used)" in out
    assert "kept and closed (max 0)" in out


def test_default_moves_to_the_outpost_the_file_names(tmp_path):
    # given another Outpost that is the default today
    OutpostFactory(slug="old", is_default=True)
    # when the file makes "local" the default
    out = apply(CONFIG, tmp_path)
    # then "local" is the only default and "old" is left otherwise untouched
    assert list(Outpost.objects.filter(is_default=True).values_list("slug", flat=True)) == ["local"]
    assert "Outpost 'old' is not in the file: left as it is" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["outposts"][0].update(spawner_class="no.such.Spawner"),
            "Outpost 'local': field 'spawner_class': 'no.such.Spawner' is not an allowed "
            "spawner class; choose one of jupyterhub.spawner.SimpleLocalProcessSpawner,",
        ),
        (
            lambda d: d["outposts"][0].update(spawner_class="os.system"),
            "Outpost 'local': field 'spawner_class': 'os.system' is not an allowed spawner",
        ),
        (
            lambda d: d["outposts"][0]["spawner_config"].update(no_such_trait=True),
            "Outpost 'local': field 'spawner_config': 'no_such_trait' is not a trait of "
            "SimpleLocalProcessSpawner.",
        ),
        (
            lambda d: d["outposts"][0]["spawner_config"].update(cmd=42),
            "Outpost 'local': field 'spawner_config': 'cmd' must be a list or None (Command "
            "trait of SimpleLocalProcessSpawner), not int 42.",
        ),
        (
            lambda d: d["outposts"][0].update(allowed_overrides=["image"]),
            "Outpost 'local': field 'allowed_overrides': 'image' is not a trait of "
            "SimpleLocalProcessSpawner.",
        ),
        (
            lambda d: d["outposts"][0]["flavors"][0].update(resources={"gpus": 1}),
            "Outpost 'local' flavor 'small': field 'resources': 'gpus' is not a trait of "
            "SimpleLocalProcessSpawner.",
        ),
        (
            lambda d: d["outposts"][0]["flavors"][0].update(resources={"mem_limit": "lots"}),
            "Outpost 'local' flavor 'small': field 'resources': 'mem_limit' must be an int "
            "(ByteSpecification trait of SimpleLocalProcessSpawner), not str 'lots'. lots is "
            "not a valid memory specification.",
        ),
        (
            lambda d: d["outposts"][0]["flavors"][0].update(max="five"),
            "Outpost 'local' flavor 'small': field 'max':",
        ),
        (
            lambda d: d["outposts"][0]["flavors"][1].update(runtime={"fortnights": 1}),
            "Outpost 'local' flavor 'big': field 'runtime' must be like",
        ),
        (
            lambda d: d["outposts"][0].update(colour="blue"),
            "outposts[0]: unknown field 'colour'",
        ),
        (
            lambda d: d["hubs"][0].update(outposts=["nowhere"]),
            "Hub 'hub1': field 'outposts': no Outpost nowhere",
        ),
        (
            lambda d: d["hubs"][1].update(secret_env="NOT_SET_ANYWHERE"),
            "Hub 'hub2': field 'secret_env': environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            lambda d: d["hubs"][0].update(name="not a slug!"),
            "Hub 'not a slug!': field 'name':",
        ),
        (
            lambda d: d["outposts"][0].update(allowed_user_options=["rm -rf /"]),
            "Outpost 'local': field 'allowed_user_options': Must be a JSON list of names.",
        ),
        (
            lambda d: d["outposts"][0].update(min_system_uid=-1),
            "Outpost 'local': field 'min_system_uid':",
        ),
        (
            lambda d: d["hubs"][0].update(callback_url_prefixes=["file:///etc/"]),
            "Hub 'hub1': field 'callback_url_prefixes': Must be a JSON list of http(s) URL",
        ),
    ],
)
def test_invalid_config_names_entry_and_field_and_writes_nothing(tmp_path, change, message):
    # given a file with one mistake, late in the file
    data = yaml.safe_load(CONFIG)
    change(data)
    # when it is applied
    with pytest.raises(CommandError) as error:
        apply(yaml.safe_dump(data), tmp_path)
    # then the error names the entry and field, and nothing was written
    assert message in str(error.value)
    assert "nothing was changed" in str(error.value)
    assert not Outpost.objects.exists()
    assert not Hub.objects.exists()


def test_dry_run_writes_nothing(tmp_path):
    # when the configuration is applied with --dry-run
    out = apply(CONFIG, tmp_path, "--dry-run")
    # then it reports what it would create, and nothing exists
    assert "created Outpost 'local'" in out
    assert "dry run: nothing was written" in out
    assert not Outpost.objects.exists()


def test_invalid_yaml_is_a_clear_error(tmp_path):
    # when a file that is not YAML is applied
    with pytest.raises(CommandError) as error:
        apply("outposts: [unclosed", tmp_path)
    # then the error says so
    assert "is not valid YAML" in str(error.value)


def test_demo_config_applies(monkeypatch, tmp_path):
    # given the demo's own configuration, filled in as scripts/demo fills it in
    monkeypatch.setenv("DEMO_HUB_SECRET", "demo-secret")
    text = (REPO / "demo" / "portal.yaml").read_text()
    text = text.replace("@VENV_BIN@", "/opt/portal/.venv/bin")
    text = text.replace("@HUB_API_URL@", "http://127.0.0.1:8081/hub/api/")
    # when it is applied
    apply(text, tmp_path)
    # then it gives a local Outpost with two flavors and the demo Hub, called back on its API
    outpost = Outpost.objects.get(slug="local")
    assert outpost.flavors.count() == 2
    assert outpost.spawner_config["cmd"] == ["/opt/portal/.venv/bin/jupyterhub-singleuser"]
    hub = Hub.objects.get(name="demo-hub")
    assert hub.outposts.get() == outpost
    assert hub.check_secret("demo-secret")
    assert hub.allows_callback("http://127.0.0.1:8081/hub/api/users/progress/events/ada")
    # and its guests get the small flavor only, everyone else both
    for name, flavors in (("guest7", ["small"]), ("ada", ["small", "large"])):
        resolution = flavor_resolution(hub=hub, outpost=outpost, authentication={"name": name})
        assert [flavor.name for flavor in resolution.flavors] == flavors


def test_generate_secrets_prints_usable_fresh_values():
    # when secrets are generated twice
    first, second = StringIO(), StringIO()
    call_command("generate_secrets", stdout=first)
    call_command("generate_secrets", stdout=second)
    values = dict(line.split("=", 1) for line in first.getvalue().splitlines())
    # then they are .env lines with a long secret key and a valid Fernet key, fresh each time
    assert set(values) == {"PORTAL_SECRET_KEY", "PORTAL_CREDENTIAL_KEY", "PORTAL_ENCRYPTION_KEYS"}
    assert len(values["PORTAL_SECRET_KEY"]) >= 50
    assert len(values["PORTAL_CREDENTIAL_KEY"]) >= 50
    assert values["PORTAL_CREDENTIAL_KEY"] != values["PORTAL_SECRET_KEY"]
    Fernet(values["PORTAL_ENCRYPTION_KEYS"])
    assert first.getvalue() != second.getvalue()


def raw_env(server_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT env FROM outposts_server WHERE id = %s", [server_id])
        return cursor.fetchone()[0]


def test_rotate_encryption_keys(settings):
    # given values written with the old key, in more than one batch
    old_key = settings.ENCRYPTION_KEYS[0]
    servers = [ServerFactory(env={"JUPYTERHUB_API_TOKEN": f"token-{n}"}) for n in range(3)]
    hub = HubFactory(name="hub-with-token")
    hub.flavors_update_token = "update-token"
    hub.save()
    before = raw_env(servers[0].pk)
    # when a new key is put first and the values are rotated
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("rotate_encryption_keys", "--batch-size", "2", stdout=out)
    # then, with the old key dropped, every value still reads and the raw column changed
    settings.ENCRYPTION_KEYS = [new_key]
    assert raw_env(servers[0].pk) != before
    Fernet(new_key).decrypt(raw_env(servers[0].pk).encode())
    for n, server in enumerate(servers):
        server.refresh_from_db()
        assert server.env == {"JUPYTERHUB_API_TOKEN": f"token-{n}"}
    hub.refresh_from_db()
    assert hub.flavors_update_token == "update-token"
    assert "outposts.Server.env: re-encrypted 3 value(s)" in out.getvalue()
    assert "outposts.Hub.flavors_update_token: re-encrypted 1 value(s)" in out.getvalue()


def test_rotate_twice_rewrites_nothing_the_second_time(settings):
    # given a value already under the newest key
    server = ServerFactory(env={"A": "1"})
    before = raw_env(server.pk)
    # when the keys are rotated
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    # then it is left as it is
    assert raw_env(server.pk) == before
    assert "outposts.Server.env: re-encrypted 0 value(s)" in out.getvalue()


def test_rotate_without_the_old_key_is_a_clear_error(settings):
    # given a value whose key is no longer in the ring
    server = ServerFactory(env={"A": "1"})
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    # when the keys are rotated
    with pytest.raises(CommandError) as error:
        call_command("rotate_encryption_keys", stdout=StringIO())
    # then the error says which value cannot be read
    assert f"Cannot decrypt outposts.Server.env of row {server.pk}" in str(error.value)


def test_flavor_factory_values_survive_apply(tmp_path):
    # given a flavor made in the admin on an Outpost the file does not name
    flavor = FlavorFactory(name="adminmade")
    # when the configuration is applied
    apply(CONFIG, tmp_path)
    # then that Outpost's flavors are not touched
    assert Flavor.objects.filter(pk=flavor.pk).exists()
