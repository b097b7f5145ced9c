"""Whether an Outpost's spawner settings can run: the one rule for class and trait values.

An Outpost names a spawner class and trait values for it (``spawner_config``), the trait
names a Hub's ``misc`` may set (``allowed_overrides``), and its flavors trait values of their
own (``resources``, applied over the Outpost's by the runner: outposts/runner/spawner.py).
These run in the Outpost's workers, which hold the portal's database credentials and keys,
so they are checked where they are saved (``Outpost.clean``, ``Flavor.clean`` and through
them the admin, ``apply_config`` and ``import_flavors``):

- the class must be one of ``settings.SPAWNER_CLASSES``, which the deployment's operators
  choose; site admins pick one of them;
- every trait name must be a configurable trait of that class
  (``cls.class_traits(config=True)``), and every value pass the trait type's own
  ``validate``, as traitlets would when the spawner is built.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from traitlets import TraitError, TraitType

from outposts.runner import kube

# How much of a refused value a message quotes.
VALUE_SHOWN = 60


class SpawnerClassRefused(ValueError):
    """The dotted path is not an allow-listed spawner class that can be imported."""


def spawner_classes_allowed() -> list[str]:
    """The dotted paths of the spawner classes Outposts may use (PORTAL_SPAWNER_CLASSES)."""
    return list(settings.SPAWNER_CLASSES)


def spawner_class_load(dotted_path: str) -> type:
    """The allow-listed spawner class at ``dotted_path``; SpawnerClassRefused otherwise,
    with a message naming it."""
    allowed = spawner_classes_allowed()
    if dotted_path not in allowed:
        raise SpawnerClassRefused(
            f"{dotted_path!r} is not an allowed spawner class; choose one of "
            f"{', '.join(allowed)} (PORTAL_SPAWNER_CLASSES)."
        )
    try:
        spawner_class = import_string(dotted_path)
    except ImportError:
        raise SpawnerClassRefused(f"Cannot import {dotted_path!r}.") from None
    from jupyterhub.spawner import Spawner

    if not (isinstance(spawner_class, type) and issubclass(spawner_class, Spawner)):
        raise SpawnerClassRefused(f"{dotted_path!r} is not a JupyterHub spawner class.")
    return spawner_class


@cache
def _configurable_traits(spawner_class: type) -> dict[str, TraitType]:
    return dict(spawner_class.class_traits(config=True))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else f"{text[:VALUE_SHOWN]}..."


def trait_names_problems(spawner_class: type, names: list[str]) -> list[str]:
    """One message per name in ``names`` that is no configurable trait of ``spawner_class``."""
    traits = _configurable_traits(spawner_class)
    return [
        f"{name!r} is not a trait of {spawner_class.__name__}."
        for name in names
        if name not in traits
    ]


def trait_values_problems(spawner_class: type, values: dict[str, Any]) -> list[str]:
    """One message per entry of ``values`` that ``spawner_class`` would refuse: a name that is
    no configurable trait of it, or a value its trait type does not accept (naming the trait
    and the type it expects)."""
    return [
        *trait_names_problems(spawner_class, list(values)),
        *trait_types_problems(spawner_class, values),
    ]


def trait_types_problems(spawner_class: type, values: dict[str, Any]) -> list[str]:
    """One message per value of ``values`` that its trait's type refuses (names that are no
    trait of ``spawner_class`` are left out: traitlets only warns about those)."""
    traits = _configurable_traits(spawner_class)
    problems: list[str] = []
    # validate() reads only the instance's class (for messages, and a few types' defaults):
    # a bare instance needs none of what a spawner's __init__ wants (user, hub, ...).
    instance = spawner_class.__new__(spawner_class)
    for name, value in values.items():
        trait = traits.get(name)
        if trait is None:
            continue
        try:
            trait.validate(instance, value)
        except (TraitError, TypeError, ValueError) as error:
            detail = str(error)
            message = (
                f"{name!r} must be {trait.info()} ({type(trait).__name__} trait of "
                f"{spawner_class.__name__}), not {type(value).__name__} {_shown(value)}."
            )
            if "expected" not in detail:  # a reason beyond the type, e.g. "2X" as a size
                message = f"{message} {detail[:200]}"
            problems.append(message)
    return problems


def spawner_settings_problems(
    *, spawner_class: str, spawner_config: Any, allowed_overrides: Any
) -> dict[str, list[str]]:
    """What is wrong with an Outpost's spawner class, ``spawner_config`` and
    ``allowed_overrides``, by field name (empty: nothing). Fields that are not a JSON object
    or list of names are left to Outpost.clean."""
    try:
        cls = spawner_class_load(spawner_class)
    except SpawnerClassRefused as error:
        return {"spawner_class": [str(error)]}
    problems: dict[str, list[str]] = {}
    if isinstance(spawner_config, dict):
        config_problems = trait_values_problems(cls, spawner_config)
        if config_problems:
            problems["spawner_config"] = config_problems
    names = allowed_overrides
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        names_problems = trait_names_problems(cls, names)
        protected = sorted(set(names) & kube.protected_traits(spawner_class))
        if protected:
            names_problems.append(
                f"A Hub may never set {', '.join(protected)} on a Kubernetes Outpost "
                "(docs/kubernetes.md)."
            )
        if names_problems:
            problems["allowed_overrides"] = names_problems
    return problems


def trait_values_problems_of(
    *, spawner_class: str, values: dict[str, Any], types_only: bool = False
) -> list[str]:
    """What is wrong with trait ``values`` the runner applies over an Outpost's config (a
    flavor's ``resources``; with ``types_only``, a Hub's allow-listed ``misc``, whose names
    the Outpost's allow-list decides) for an Outpost of ``spawner_class``. A class that is
    itself refused is the Outpost's problem."""
    if not values:
        # Nothing to check, so nothing to import: loading a spawner class imports JupyterHub
        # (with SQLAlchemy and alembic), over a second of CPU that held up every start a web
        # process served while its first one imported it (bench/README.md, seventh round).
        return []
    try:
        cls = spawner_class_load(spawner_class)
    except SpawnerClassRefused:
        return []
    if types_only:
        return trait_types_problems(cls, values)
    return trait_values_problems(cls, values)
