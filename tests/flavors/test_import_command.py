"""``manage.py import_flavors``: what it prints, that it is idempotent and all or nothing, that a
dry run writes nothing, and that its errors name the file and the key path."""

import pytest
import yaml
from django.core.management.base import CommandError

from flavors.models import Flavor, HubPolicy, UserRule
from outposts.models import Server
from tests.factories import HubFactory, ServerFactory
from tests.support.flavor_files import FLAVOR_FILE, file_hubs, import_flavors, outpost_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def hubs(outpost):
    return file_hubs(outpost)


def changed(text: str, change) -> str:
    data = yaml.safe_load(text)
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


def failure(tmp_path, text: str, *extra: str, **options: str) -> str:
    with pytest.raises(CommandError) as error:
        import_flavors(tmp_path, text, *extra, **options)
    return str(error.value)


def test_the_import_prints_what_it_created_and_again_changes_nothing_and_says_so(
    outpost, hubs, tmp_path
):
    # when the file is imported
    out = import_flavors(tmp_path, FLAVOR_FILE)
    # then it lists each row it created, and counts them
    assert "created Outpost 'local' flavor 'large'\n" in out
    assert "created Outpost 'local' policy of Hub 'course1' for 'large'\n" in out
    assert "created Outpost 'local' policy of Hub 'lab-a' for 'gpu'\n" in out
    assert "created Outpost 'local' user rule 'external'\n" in out
    assert "created Outpost 'local' policy of Hub 'public'" not in out
    assert "19 created, 0 changed, 0 deleted, 0 unchanged" in out
    assert [rule.name for rule in UserRule.objects.filter(outpost=outpost)] == [
        "staff",
        "students",
        "external",
        "blocked",
    ]
    written = outpost_rows(outpost)
    # when it is imported again
    again = import_flavors(tmp_path, FLAVOR_FILE)
    # then nothing is written, and the output says so (and still names the differences)
    assert outpost_rows(outpost) == written
    assert "created" not in again and "updated" not in again and "deleted" not in again
    assert "nothing changed: Outpost 'local' already is as " in again
    assert "differs: users.staff grants gpu, which hubs.courses excludes" in again


def test_a_changed_file_reports_what_changed_and_removes_what_it_no_longer_names(
    outpost, hubs, tmp_path
):
    # given the file imported
    import_flavors(tmp_path, FLAVOR_FILE)

    # when large's max changes, gpu, the labs set and the external user set are gone, and
    # blocked moves to the front
    def change(data):
        data["flavors"]["large"]["max"] = 12
        del data["flavors"]["gpu"]
        del data["hubs"]["labs"]
        del data["hubs"]["tutors"]
        data["hubs"]["courses"]["flavorsOverride"].pop("gpu")
        del data["users"]["external"]
        data["users"] = {"blocked": data["users"].pop("blocked"), **data["users"]}

    out = import_flavors(tmp_path, changed(FLAVOR_FILE, change))
    # then exactly those rows changed
    assert "updated Outpost 'local' flavor 'large' (max)\n" in out
    assert "deleted Outpost 'local' flavor 'gpu' (not in the file, never used)\n" in out
    assert "deleted Outpost 'local' policy of Hub 'lab-a' for 'small' (not in the file)\n" in out
    assert "deleted Outpost 'local' user rule 'external' (not in the file)\n" in out
    assert "updated Outpost 'local' user rule 'blocked' (position)\n" in out
    assert "updated Outpost 'local' user rule 'staff' (position)\n" in out
    assert "updated Outpost 'local' policy" not in out
    assert Flavor.objects.get(outpost=outpost, name="large").max == 12
    assert not HubPolicy.objects.filter(hub__name="lab-a").exists()
    assert [rule.name for rule in UserRule.objects.filter(outpost=outpost)] == [
        "blocked",
        "staff",
        "students",
    ]


def test_a_flavor_the_file_drops_is_kept_and_closed_if_used_and_refused_if_running(
    outpost, hubs, tmp_path
):
    # given the file imported, and a server of gpu that has ended
    import_flavors(tmp_path, FLAVOR_FILE)
    gpu = Flavor.objects.get(outpost=outpost, name="gpu")
    server = ServerFactory(outpost=outpost, hub=hubs["public"], flavor=gpu)
    without_gpu = changed(FLAVOR_FILE, lambda data: data["flavors"].pop("gpu"))
    # when a file without gpu is imported while the server runs, it fails and changes nothing
    before = outpost_rows(outpost)
    message = failure(tmp_path, without_gpu)
    assert (
        "flavors: gpu is not in the file, but 1 active server(s) use it on Outpost 'local'; "
        "keep it in the file until they have ended; nothing was changed"
    ) in message
    assert outpost_rows(outpost) == before
    # and once it has ended, gpu is kept for its history but closed
    server.status = Server.Status.STOPPED
    server.save()
    out = import_flavors(tmp_path, without_gpu)
    gpu.refresh_from_db()
    assert gpu.max == 0
    assert "flavor 'gpu' is not in the file but 1 server(s) used it: kept and closed (max 0)" in out


def test_a_dry_run_reports_and_writes_nothing(outpost, hubs, tmp_path, pushes):
    # when the file is imported with --dry-run
    out = []
    queued = pushes(lambda: out.append(import_flavors(tmp_path, FLAVOR_FILE, "--dry-run")))
    # then it says what it would create, and nothing exists, nor was any Hub told
    assert "created Outpost 'local' flavor 'small'" in out[0]
    assert "differs: users.staff grants gpu" in out[0]
    assert out[0].rstrip().endswith("dry run: nothing was written")
    assert outpost_rows(outpost) == {"flavors": [], "policies": [], "rules": []}
    assert queued == []


def test_hubs_are_sent_their_new_table_after_an_import_that_changed_something(
    outpost, hubs, tmp_path, pushes
):
    # given a Hub elsewhere
    HubFactory(name="elsewhere")
    # when the file is imported, then every Hub of the Outpost is pushed its table, once
    queued = pushes(lambda: import_flavors(tmp_path, FLAVOR_FILE))
    assert queued == sorted((hub.pk, outpost.pk) for hub in hubs.values())
    # and an import that changes nothing pushes nothing
    assert pushes(lambda: import_flavors(tmp_path, FLAVOR_FILE)) == []


def test_a_hub_the_file_names_that_does_not_exist_fails_the_import_naming_it(
    outpost, hubs, tmp_path
):
    text = changed(
        FLAVOR_FILE,
        lambda data: data["hubs"]["research"].update(jupyterhub_name=["research", "hpc-hub"]),
    )
    message = failure(tmp_path, text)
    assert str(tmp_path / "flavors.yaml") in message
    assert "hubs.research.jupyterhub_name: no Hub named hpc-hub in the portal" in message
    assert outpost_rows(outpost) == {"flavors": [], "policies": [], "rules": []}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["flavors"].update({"Large GPU": {"max": 1}}),
            "flavors.Large GPU: field 'name': Enter a valid “slug”",
        ),
        (
            lambda d: d["flavors"]["small"].update(resources=["cpu_limit"]),
            "flavors.small: field 'resources': Must be a JSON object",
        ),
        (
            lambda d: d["hubs"]["research"]["flavorsOverride"]["gpu"].update(
                runtime={"fortnights": 1}
            ),
            "hubs.research.flavorsOverride.gpu: field 'overrides': unknown runtime units "
            "['fortnights']",
        ),
        (
            lambda d: d["hubs"]["courses"]["flavorsOverride"]["large"].update(resources="big"),
            "hubs.courses.flavorsOverride.large: field 'overrides': resources must be a JSON",
        ),
        (
            lambda d: d["users"]["staff"].update(authentication={"groups": 5}),
            "users.staff: field 'attributes': groups: a pattern is a text or a list of texts",
        ),
        (
            lambda d: d["users"]["external"]["flavorsOverride"]["small"].update(display_name=3),
            "users.external: field 'overrides': small: display_name must be text",
        ),
        (
            lambda d: d["users"]["blocked"].update(weight="high"),
            "users.blocked.weight: must be a whole number",
        ),
        (
            lambda d: d["flavors"]["large"].update(runtime={"hours": -2}),
            "flavors.large.runtime: a runtime must be positive",
        ),
    ],
)
def test_a_bad_value_fails_with_the_file_and_key_path_and_changes_nothing(
    outpost, hubs, tmp_path, change, message
):
    # given the file imported once
    import_flavors(tmp_path, FLAVOR_FILE)
    before = outpost_rows(outpost)

    # when a file with other changes early and one mistake is imported
    def edit(data):
        data["flavors"]["small"]["max"] = 7
        data["hubs"]["labs"]["flavors"] = ["small", "large"]
        change(data)

    error = failure(tmp_path, changed(FLAVOR_FILE, edit))
    # then the error names the file and where in it, and nothing of the file was written
    assert error.startswith(f"{tmp_path / 'flavors.yaml'}: ")
    assert message in error
    assert error.endswith("; nothing was changed")
    assert outpost_rows(outpost) == before


def test_an_unknown_outpost_and_a_file_that_is_not_yaml_are_clear_errors(outpost, tmp_path):
    assert failure(tmp_path, FLAVOR_FILE, outpost="nowhere") == "no Outpost 'nowhere'"
    assert "is not valid YAML" in failure(tmp_path, "flavors: [unclosed")


def test_policies_of_a_hub_not_granted_the_outpost_are_imported_and_said(outpost, hubs, tmp_path):
    # given the research Hub no longer granted the Outpost
    hubs["research"].outposts.clear()
    # when the file is imported
    out = import_flavors(tmp_path, FLAVOR_FILE)
    # then its policies are written, for when it is granted the Outpost again, and it is said
    assert HubPolicy.objects.filter(hub=hubs["research"]).count() == 3
    assert (
        "note: Outpost 'local': Hub 'research' has policies but may not use the Outpost: they "
        "apply once it is granted it"
    ) in out
