"""The spawn form: what each Outpost offers a user, and checking what they chose.

Pure functions: the spawner fetches the offers, these render and validate them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from .errors import InvalidOptions
from .wire import USER_OPTION_KEYS, FlavorOffer, OutpostState

#: Flavor names are slugs on the portal (Flavor.name is a SlugField); used with fullmatch
#: (``$`` with match would let "small\n" through).
FLAVOR_NAME = re.compile(r"[-A-Za-z0-9_]{1,100}")

DEFAULT_PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


@dataclass(frozen=True)
class OutpostOffer:
    """One configured Outpost as the user sees it: its flavors, or why it cannot be used."""

    name: str
    display_name: str
    flavors: list[FlavorOffer] = field(default_factory=list)
    error: str = ""
    state: OutpostState = OutpostState()
    # What each of the user's projects allows here (userflavors with the project).
    project_flavors: Mapping[str, list[FlavorOffer]] = field(default_factory=dict)

    def flavors_for(self, project: str = "") -> list[FlavorOffer]:
        """The flavors offered without a project, or in ``project`` (those without one when
        the project's were not asked for: the portal's admission decides)."""
        return self.project_flavors.get(project, self.flavors) if project else self.flavors

    def flavor(self, name: str, project: str = "") -> FlavorOffer | None:
        return next((offer for offer in self.flavors_for(project) if offer.name == name), None)

    @property
    def usable(self) -> bool:
        """Whether a server can be started here now: reachable and neither draining nor
        disabled."""
        return not self.error and self.state.accepts_starts

    def why_unusable(self) -> str:
        """The sentence the form shows under the systems, '' for a usable Outpost."""
        if self.error:
            return self.error
        if self.state.accepts_starts:
            return ""
        starts = "new servers" if self.state.state == "draining" else "servers"
        sentence = f"It is {self.state.state} and starts no {starts}."
        return f"{sentence} {self.state.message}" if self.state.message else sentence


def describe_availability(flavor: FlavorOffer) -> tuple[str, bool]:
    """What the form says about a flavor's slots for this user, and whether they can start
    it now: ``("3 free", True)``, ``("full: all 4 in use", False)``, ...

    The user's own limit is named before the Hub's: it is the one they can do something
    about (stop a server of theirs).
    """
    if flavor.max == 0 or (flavor.user_free is not None and flavor.max_per_user == 0):
        return "closed", False
    if flavor.user_free == 0:
        return f"you already run {flavor.current_per_user} of {flavor.max_per_user}", False
    if flavor.hub_free == 0:
        return f"full: all {flavor.max} in use", False
    free = flavor.free
    return ("unlimited" if free is None else f"{free} free"), True


_DURATION_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def describe_runtime(seconds: int | None) -> str:
    """``"stops after 2 h"``, ``"stops after 1 h 30 min"``; '' without a runtime."""
    if not seconds:
        return ""
    parts = []
    for unit, size in _DURATION_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}")
    return "stops after " + " ".join(parts)


def describe_flavor(flavor: FlavorOffer) -> tuple[str, bool]:
    """The flavor's option text, e.g. ``"Small (3 free, stops after 2 h)"``, and whether it
    can be chosen."""
    availability, startable = describe_availability(flavor)
    details = ", ".join(
        part for part in (availability, describe_runtime(flavor.runtime_seconds)) if part
    )
    return f"{flavor.display_name} ({details})", startable


def describe_system(offer: OutpostOffer) -> str:
    """The system's option text: its name, and why it cannot be chosen if it cannot."""
    if offer.error:
        return f"{offer.display_name} (unavailable)"
    if not offer.state.accepts_starts:
        reason = offer.state.state
        if offer.state.message:
            reason = f"{reason}: {offer.state.message}"
        return f"{offer.display_name} ({reason})"
    return offer.display_name


def _attrs(**attributes: str | bool) -> str:
    parts = []
    for name, value in attributes.items():
        name = name.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(name)
        elif value is not False:
            parts.append(f'{name}="{escape(value, quote=True)}"')
    return " ".join(parts)


# Shows only the flavors of the chosen system and project, and the chosen flavor's
# description. Without JavaScript every option stays visible and options_from_form still
# rejects wrong combinations.
_FORM_SCRIPT = """<script>
(function () {
  var system = document.getElementById("outpost-system");
  var flavor = document.getElementById("outpost-flavor");
  var project = document.getElementById("outpost-project");
  if (!system || !flavor) { return; }
  function fitting(option) {
    return option.dataset.outpost === system.value
      && option.dataset.project === (project ? project.value : "");
  }
  function sync(chooseFirst) {
    var current = flavor.options[flavor.selectedIndex];
    var stillFits = current && fitting(current) && !current.disabled;
    Array.prototype.forEach.call(flavor.options, function (option) {
      var fits = fitting(option);
      option.hidden = !fits;
      if (fits && !option.disabled && (chooseFirst || !stillFits)) {
        option.selected = true; stillFits = true; chooseFirst = false;
      }
    });
    document.querySelectorAll(".outpost-flavor-description").forEach(function (text) {
      var chosen = flavor.options[flavor.selectedIndex];
      text.hidden = !chosen || text.dataset.outpost !== chosen.dataset.outpost
        || text.dataset.flavor !== chosen.value;
    });
  }
  system.addEventListener("change", function () { sync(true); });
  if (project) { project.addEventListener("change", function () { sync(true); }); }
  flavor.addEventListener("change", function () { sync(false); });
  sync(false);
})();
</script>"""


def make_options_form(
    offers: Sequence[OutpostOffer],
    *,
    projects: Sequence[str] = (),
    selected: Mapping[str, Any] | None = None,
) -> str:
    """The HTML of the spawn form; every text from config or portal is escaped.

    Fields: ``outpost`` (system), ``flavor`` and, only when the user has projects,
    ``project``. ``selected`` preselects earlier choices (the last user_options).
    """
    selected = selected or {}
    chosen_outpost = str(selected.get("outpost") or "")
    chosen_flavor = str(selected.get("flavor") or "")
    chosen_project = str(selected.get("project") or "")
    if not any(offer.name == chosen_outpost and offer.usable for offer in offers):
        chosen_outpost = next((offer.name for offer in offers if offer.usable), "")

    system_options = []
    for offer in offers:
        attrs = _attrs(
            value=offer.name, selected=offer.name == chosen_outpost, disabled=not offer.usable
        )
        system_options.append(f"<option {attrs}>{escape(describe_system(offer))}</option>")

    flavor_options = []
    descriptions = []
    listings = [
        (offer, project, flavor)
        for offer in offers
        for project in ("", *projects)
        for flavor in offer.flavors_for(project)
    ]
    for offer, project, flavor in listings:
        label, startable = describe_flavor(flavor)
        startable = startable and offer.usable
        is_chosen = (offer.name, project, flavor.name) == (
            chosen_outpost,
            chosen_project,
            chosen_flavor,
        )
        attrs = _attrs(
            value=flavor.name,
            data_outpost=offer.name,
            data_project=project,
            selected=is_chosen and startable,
            disabled=not startable,
        )
        flavor_options.append(f"<option {attrs}>{escape(label)}</option>")
        if flavor.description and not project:
            text_attrs = _attrs(
                class_="form-text outpost-flavor-description",
                data_outpost=offer.name,
                data_flavor=flavor.name,
            )
            descriptions.append(
                f"<div {text_attrs}>{escape(flavor.display_name)}: "
                f"{escape(flavor.description)}</div>"
            )

    notes = [
        f'<div class="form-text text-warning">{escape(offer.display_name)}: '
        f"{escape(offer.why_unusable())}</div>"
        for offer in offers
        if not offer.usable
    ]
    if not flavor_options:
        notes.append('<div class="form-text text-warning">No flavor is available to you.</div>')

    parts = [
        '<div class="mb-3">',
        '<label class="form-label" for="outpost-system">System</label>',
        '<select class="form-select" id="outpost-system" name="outpost" required>',
        *system_options,
        "</select>",
        *notes,
        "</div>",
        '<div class="mb-3">',
        '<label class="form-label" for="outpost-flavor">Flavor</label>',
        '<select class="form-select" id="outpost-flavor" name="flavor" required>',
        *flavor_options,
        "</select>",
        *descriptions,
        "</div>",
    ]
    if projects:
        project_options = [f"<option {_attrs(value='')}>(no project)</option>"]
        project_options += [
            f"<option {_attrs(value=project, selected=project == chosen_project)}>"
            f"{escape(project)}</option>"
            for project in projects
        ]
        parts += [
            '<div class="mb-3">',
            '<label class="form-label" for="outpost-project">Project</label>',
            '<select class="form-select" id="outpost-project" name="project">',
            *project_options,
            "</select>",
            "</div>",
        ]
    parts.append(_FORM_SCRIPT)
    return "\n".join(parts)


def _single(form_data: Mapping[str, Any], key: str) -> str:
    """One form value: JupyterHub hands over lists of strings per field."""
    value = form_data.get(key)
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value).strip()


def check_project(project: str, *, pattern: str, projects: Sequence[str] = ()) -> None:
    if not re.fullmatch(pattern, project):
        raise InvalidOptions(f"Project {project!r} is not a valid project name.")
    if projects and project not in projects:
        raise InvalidOptions(
            f"You are not a member of project {project!r}. Your projects: {', '.join(projects)}."
        )


def make_user_options(
    form_data: Mapping[str, Any],
    *,
    offers: Sequence[OutpostOffer],
    projects: Sequence[str] = (),
    project_pattern: str = DEFAULT_PROJECT_PATTERN,
) -> dict[str, str]:
    """Turn the submitted form into user_options, or raise InvalidOptions saying what is wrong.

    Runs before any request leaves the Hub: the system must be configured and reachable, the
    flavor one it offered this user, the project well-formed (and the user's, if known).
    """
    outpost_name = _single(form_data, "outpost")
    offer = next((offer for offer in offers if offer.name == outpost_name), None)
    if offer is None:
        known = ", ".join(offer.name for offer in offers) or "none configured"
        raise InvalidOptions(f"Unknown system {outpost_name!r}. Known systems: {known}.")
    if not offer.usable:
        raise InvalidOptions(
            f"{offer.display_name} cannot be used right now: {offer.why_unusable()}"
        )
    project = _single(form_data, "project")
    if project:
        check_project(project, pattern=project_pattern, projects=projects)
    where = f"{offer.display_name} in project {project}" if project else offer.display_name
    flavor_name = _single(form_data, "flavor")
    offered = offer.flavors_for(project)
    if not offered:
        raise InvalidOptions(f"{where} offers you no flavor.")
    if offer.flavor(flavor_name, project) is None:
        raise InvalidOptions(
            f"Flavor {flavor_name!r} is not offered to you on {where}. "
            f"Offered: {', '.join(flavor.name for flavor in offered)}."
        )
    user_options = {"outpost": outpost_name, "flavor": flavor_name}
    if project:
        user_options["project"] = project
    return user_options


def check_user_options(
    user_options: Mapping[str, Any],
    *,
    outpost_names: Sequence[str],
    project_pattern: str = DEFAULT_PROJECT_PATTERN,
) -> None:
    """What start() can check of user_options that did not come through the form (REST API).

    Exactly the form's keys are accepted: any other key is refused rather than dropped, so
    that an API caller learns it has no effect. The flavor is only checked for its form
    here: which flavors a user may use is the portal's decision, and it refuses with a
    message the user sees.
    """
    unknown = sorted(str(key) for key in user_options if key not in USER_OPTION_KEYS)
    if unknown:
        raise InvalidOptions(
            f"Unknown options {', '.join(unknown)}. "
            f"Accepted options: {', '.join(USER_OPTION_KEYS)}."
        )
    outpost_name = user_options.get("outpost")
    if not isinstance(outpost_name, str) or outpost_name not in outpost_names:
        known = ", ".join(outpost_names) or "none configured"
        raise InvalidOptions(f"Unknown system {outpost_name!r}. Known systems: {known}.")
    flavor = user_options.get("flavor")
    if flavor not in (None, "") and not (isinstance(flavor, str) and FLAVOR_NAME.fullmatch(flavor)):
        raise InvalidOptions(f"Flavor {flavor!r} is not a valid flavor name.")
    project = user_options.get("project")
    if project not in (None, ""):
        if not isinstance(project, str):
            raise InvalidOptions(f"Project {project!r} is not a valid project name.")
        check_project(project, pattern=project_pattern)
