"""apply_config's Hub policies and user rules (outposts/provisioning.py): written after the
file's Hubs, idempotent, deleted when the file drops them, checked by the models' rules, and
answered by the API as written."""

from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from flavors.models import HubPolicy, UserRule
from outposts.models import Hub, Outpost
from tests.factories import HUB_SECRET
from tests.support.api import BASE, send
from tests.support.flavor_files import client_of, outpost_rows

pytestmark = pytest.mark.django_db

CONFIG = f"""
outposts:
  - slug: local
    flavors:
      - {{name: small, weight: 10, max_per_user: 2, runtime: {{hours: 2}}}}
      - {{name: large, weight: 5, max: 10, runtime: {{hours: 8}}}}
      - {{name: gpu, weight: 1, max: 4}}
    hub_policies:
      - {{hub: course1, flavor: small}}
      - {{hub: course1, flavor: large, allowed: true, cap: 5,
          overrides: {{runtime: {{hours: 4}}, display_name: Large (course)}}}}
      - {{hub: course1, flavor: gpu, allowed: false}}
    user_rules:
      - {{name: staff, attributes: {{groups: [staff]}}, weight: 10, hubs: [course1],
          flavors: [large], overrides: {{large: {{max_per_user: 3}}}}}}
      - {{name: guests, attributes: {{email: "*@example.org"}}, negate: true,
          flavors: [small]}}
      - {{name: blocked, attributes: {{name: [mallory]}}, weight: 100, forbidden: true}}
hubs:
  - {{name: course1, secret: {HUB_SECRET}, outposts: [local]}}
  - {{name: public, secret: {HUB_SECRET}, outposts: [local]}}
"""


def apply(text: str, tmp_path, *extra: str) -> str:
    path = tmp_path / "portal.yaml"
    path.write_text(text)
    out = StringIO()
    call_command("apply_config", str(path), *extra, stdout=out)
    return out.getvalue()


def changed(change) -> str:
    data = yaml.safe_load(CONFIG)
    change(data["outposts"][0])
    return yaml.safe_dump(data, sort_keys=False)


def written() -> dict:
    """The Hub policies and user rules apply_config wrote for Outpost local."""
    rows = outpost_rows(Outpost.objects.filter(slug="local").first())
    return {"policies": rows["policies"], "rules": rows["rules"]}


def test_policies_and_rules_are_written_for_hubs_the_same_file_creates(tmp_path):
    # when the configuration is applied to an empty portal
    out = apply(CONFIG, tmp_path)
    # then the Hubs exist and carry the policies and rules as written
    large = HubPolicy.objects.get(hub__name="course1", flavor__name="large")
    assert (large.allowed, large.cap) == (True, 5)
    assert large.overrides == {"runtime": {"hours": 4}, "display_name": "Large (course)"}
    assert not HubPolicy.objects.get(hub__name="course1", flavor__name="gpu").allowed
    staff, guests, blocked = UserRule.objects.all()
    assert (staff.name, staff.position, staff.weight) == ("staff", 0, 10)
    assert [hub.name for hub in staff.hubs.all()] == ["course1"]
    assert [flavor.name for flavor in staff.flavors.all()] == ["large"]
    assert staff.overrides == {"large": {"max_per_user": 3}}
    assert (guests.negate, guests.position, blocked.forbidden) == (True, 1, True)
    assert "created Hub 'course1'" in out
    assert "created Outpost 'local' policy of Hub 'course1' for 'large'" in out
    assert "created Outpost 'local' user rule 'staff'" in out


def test_the_api_answers_as_the_policies_and_rules_say(tmp_path):
    # given the configuration applied
    apply(CONFIG, tmp_path)
    course, public = (client_of(Hub.objects.get(name=name)) for name in ("course1", "public"))
    # then the course Hub has its allow-list, cap and overrides, the other Hub everything
    listed = course.get(BASE + "flavors").json()
    assert {name: (f["max"], f["runtime"]) for name, f in listed.items()} == {
        "small": (-1, {"hours": 2}),
        "large": (5, {"hours": 4}),
    }
    assert list(public.get(BASE + "flavors").json()) == ["small", "large", "gpu"]
    # and the rules decide per user: staff on the course Hub, guests anywhere, blocked users
    staff = send(course, "POST", BASE + "userflavors", {"groups": ["staff"], "email": "a@x.org"})
    assert {name: f["maxPerUser"] for name, f in staff.json().items()} == {"large": 3}
    staff_elsewhere = send(
        public, "POST", BASE + "userflavors", {"groups": ["staff"], "email": "a@example.org"}
    )
    assert list(staff_elsewhere.json()) == ["small", "large", "gpu"]
    guest = send(public, "POST", BASE + "userflavors", {"email": "eve@gmail.com"})
    assert list(guest.json()) == ["small"]
    blocked = send(public, "POST", BASE + "userflavors", {"name": "mallory"})
    assert blocked.json() == {}


def test_applying_twice_changes_nothing(tmp_path, pushes):
    # given the configuration applied
    apply(CONFIG, tmp_path)
    before = written()
    # when it is applied again
    out = []
    queued = pushes(lambda: out.append(apply(CONFIG, tmp_path)))
    # then no row changed, each is reported unchanged, and no Hub is sent a new table
    assert written() == before
    assert "created" not in out[0] and "updated" not in out[0] and "deleted" not in out[0]
    assert "unchanged Outpost 'local' policy of Hub 'course1' for 'large'" in out[0]
    assert "unchanged Outpost 'local' user rule 'blocked'" in out[0]
    assert queued == []


def test_changes_update_and_what_the_file_drops_is_deleted(tmp_path, pushes):
    # given the configuration applied
    apply(CONFIG, tmp_path)

    # when the large cap changes, the gpu policy and the guests rule are gone and blocked
    # moves to the front
    def change(outpost):
        outpost["hub_policies"][1]["cap"] = 6
        del outpost["hub_policies"][2]
        staff, _, blocked = outpost["user_rules"]
        outpost["user_rules"] = [blocked, staff]

    out = []
    queued = pushes(lambda: out.append(apply(changed(change), tmp_path)))
    # then exactly those rows change, and the Outpost's Hubs are sent their new tables
    assert "updated Outpost 'local' policy of Hub 'course1' for 'large' (cap)" in out[0]
    assert "deleted Outpost 'local' policy of Hub 'course1' for 'gpu' (not in the file)" in out[0]
    assert "deleted Outpost 'local' user rule 'guests' (not in the file)" in out[0]
    assert "updated Outpost 'local' user rule 'blocked' (position)" in out[0]
    assert [rule.name for rule in UserRule.objects.all()] == ["blocked", "staff"]
    outpost = Outpost.objects.get(slug="local")
    assert queued == sorted((hub.pk, outpost.pk) for hub in Hub.objects.all())


def test_an_outpost_without_policies_or_rules_in_the_file_has_none(tmp_path):
    apply(CONFIG, tmp_path)
    apply(
        changed(lambda outpost: [outpost.pop("hub_policies"), outpost.pop("user_rules")]), tmp_path
    )
    assert not HubPolicy.objects.exists() and not UserRule.objects.exists()


def test_a_policy_of_a_hub_not_granted_the_outpost_is_written_and_said(tmp_path):
    data = yaml.safe_load(CONFIG)
    data["hubs"][0]["outposts"] = []
    out = apply(yaml.safe_dump(data), tmp_path)
    assert HubPolicy.objects.filter(hub__name="course1").count() == 3
    assert (
        "note: Outpost 'local': Hub 'course1' has policies but may not use the Outpost: they "
        "apply once it is granted it"
    ) in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda o: o["hub_policies"][0].update(hub="nohub"),
            "Outpost 'local' policy of Hub 'nohub' for 'small': field 'hub': no Hub 'nohub'",
        ),
        (
            lambda o: o["hub_policies"][0].update(flavor="tiny"),
            "Outpost 'local' policy of Hub 'course1' for 'tiny': field 'flavor': Outpost "
            "'local' has no flavor 'tiny'",
        ),
        (
            lambda o: o["hub_policies"][1].update(overrides={"max": 3}),
            "Outpost 'local' policy of Hub 'course1' for 'large': field 'overrides': 'max' "
            "cannot be overridden",
        ),
        (
            lambda o: o["hub_policies"][1].update(cap=-1),
            "Outpost 'local' policy of Hub 'course1' for 'large': field 'cap':",
        ),
        (
            lambda o: o["hub_policies"][0].update(allowed="yes"),
            "field 'allowed' must be true or false",
        ),
        (
            lambda o: o["hub_policies"].append({"hub": "course1", "flavor": "small"}),
            "Outpost 'local' policy of Hub 'course1' for 'small': named twice",
        ),
        (
            lambda o: o["hub_policies"][0].update(colour="blue"),
            "Outpost 'local' hub_policies[0]: unknown field 'colour'",
        ),
        (
            lambda o: o["user_rules"][0].update(hubs=["course1", "nohub"]),
            "Outpost 'local' user rule 'staff': field 'hubs': no Hub 'nohub'",
        ),
        (
            lambda o: o["user_rules"][0].update(flavors=["large", "tiny"]),
            "Outpost 'local' user rule 'staff': field 'flavors': Outpost 'local' has no "
            "flavor 'tiny'",
        ),
        (
            lambda o: o["user_rules"][0].update(overrides={"tiny": {"weight": 1}}),
            "Outpost 'local' user rule 'staff': field 'overrides': tiny: no such flavor",
        ),
        (
            lambda o: o["user_rules"][1].update(attributes={"email": 5}),
            "Outpost 'local' user rule 'guests': field 'attributes': email: a pattern is",
        ),
        (
            lambda o: o["user_rules"][2].update(name="staff"),
            "Outpost 'local' user rule 'staff': named twice",
        ),
        (
            lambda o: o["user_rules"][0].pop("name"),
            "Outpost 'local' user_rules[0]: field 'name' is required",
        ),
        (lambda o: o.update(user_rules={"staff": {}}), "field 'user_rules' must be a list"),
    ],
)
def test_a_bad_policy_or_rule_names_the_entry_and_field_and_writes_nothing(
    tmp_path, change, message
):
    with pytest.raises(CommandError) as error:
        apply(changed(change), tmp_path)
    assert message in str(error.value)
    assert not Outpost.objects.exists() and not Hub.objects.exists()


def test_a_dry_run_writes_no_policies_or_rules(tmp_path, pushes):
    out = []
    queued = pushes(lambda: out.append(apply(CONFIG, tmp_path, "--dry-run")))
    assert "created Outpost 'local' user rule 'staff'" in out[0]
    assert written() == {"policies": [], "rules": []}
    assert queued == []


def test_an_outposts_state_and_its_message_are_written_and_pushed(tmp_path, pushes):
    # given the file applied once
    apply(CONFIG, tmp_path)
    message = "Maintenance until Monday 08:00."

    # when the file drains the Outpost with a message for its users
    def drain(outpost):
        outpost.update(state="draining", state_message=message)

    queued = pushes(lambda: apply(changed(drain), tmp_path))
    # then the Outpost says so to Hubs, and each Hub granted it is told its new table
    outpost = Outpost.objects.get(slug="local")
    assert (outpost.state, outpost.state_message) == ("draining", message)
    response = client_of(Hub.objects.get(name="course1")).get(BASE + "flavors")
    assert response.headers["Outpost-State-Message"] == message
    assert len(queued) == 2
