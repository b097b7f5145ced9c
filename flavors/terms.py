"""An Outpost's flavor terms (its flavors, Hub policies and user rules), read once per change.

Every flavor list, userflavors answer and admission resolves them (flavors/resolution.py),
and they change only when an admin or apply_config writes them. So each process keeps the
terms it last read of each Outpost, with the Outpost's ``flavor_terms_token``: every save or
deletion of a flavor, a Hub policy or a user rule, every change of a rule's Hubs or flavors
and the deletion of a Hub a rule names give the Outpost a new token, in the writing
transaction (the receivers below). A reader that finds another token on the Outpost row reads
the terms again, so a change is seen by every process with its commit. The token is random,
not counted: the token of a change that was rolled back never comes back.

A write that sends no model signal (QuerySet.update, bulk_create, raw SQL) must call
``flavor_terms_changed`` itself.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from flavors.models import Flavor, HubPolicy, UserRule
from flavors.resolution import PolicyTerms, RuleTerms
from outposts.models import Hub, Outpost


@dataclass(frozen=True)
class FlavorTerms:
    """What resolution reads of one Outpost, besides the Outpost's own state and a project:
    its flavor rows, each Hub's policies on it and its user rules in list order."""

    flavors: tuple[Flavor, ...]
    policies: Mapping[int, tuple[PolicyTerms, ...]]  # by Hub id
    rules: tuple[RuleTerms, ...]

    def policies_of(self, hub_id: int) -> tuple[PolicyTerms, ...]:
        return self.policies.get(hub_id, ())


# Outpost id -> the token the terms were read under, and the terms.
_kept: dict[int, tuple[uuid.UUID, FlavorTerms]] = {}


def flavor_terms(*, outpost_id: int, token: uuid.UUID) -> FlavorTerms:
    """The terms of the Outpost whose row, as the caller read it, holds ``token``.

    Read after the token, a fresh read is never older than the token says; if it is newer,
    it is kept under a token no later reader holds, and read again once."""
    kept = _kept.get(outpost_id)
    if kept is not None and kept[0] == token:
        return kept[1]
    terms = _read(outpost_id)
    _kept[outpost_id] = (token, terms)
    return terms


def _read(outpost_id: int) -> FlavorTerms:
    policies: dict[int, list[PolicyTerms]] = defaultdict(list)
    for hub_id, *terms in HubPolicy.objects.filter(outpost_id=outpost_id).values_list(
        "hub_id", "flavor_id", "allowed", "cap", "overrides"
    ):
        policies[hub_id].append(PolicyTerms(*terms))
    rules = UserRule.objects.filter(outpost_id=outpost_id).prefetch_related("hubs", "flavors")
    return FlavorTerms(
        flavors=tuple(Flavor.objects.filter(outpost_id=outpost_id)),
        policies={hub_id: tuple(terms) for hub_id, terms in policies.items()},
        rules=tuple(
            RuleTerms(
                name=rule.name,
                attributes=rule.attributes,
                negate=rule.negate,
                weight=rule.weight,
                forbidden=rule.forbidden,
                hub_ids=frozenset(hub.pk for hub in rule.hubs.all()),
                flavor_ids=frozenset(flavor.pk for flavor in rule.flavors.all()),
                overrides=rule.overrides,
            )
            for rule in rules
        ),
    )


def flavor_terms_changed(*, outpost_ids: Iterable[int]) -> dict[int, uuid.UUID]:
    """Give each Outpost a new token, in the caller's transaction: every process reads its
    terms again once the change commits. Returns the new tokens."""
    tokens = {outpost_id: uuid.uuid4() for outpost_id in set(outpost_ids)}
    for outpost_id, token in tokens.items():
        Outpost.objects.filter(pk=outpost_id).update(flavor_terms_token=token)
    return tokens


# Receivers (connected in FlavorsConfig.ready).


def _row_changed(sender: Any, instance: Flavor | HubPolicy | UserRule, **kwargs: Any) -> None:
    tokens = flavor_terms_changed(outpost_ids=[instance.outpost_id])
    # The Outpost object the row was saved with holds the new token too, as if read again.
    if type(instance).outpost.is_cached(instance):
        instance.outpost.flavor_terms_token = tokens[instance.outpost_id]


def _rule_links_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """A rule's Hubs or flavors changed, from either side of the link."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if not reverse:
        outpost_ids = [instance.outpost_id]
    elif action == "pre_clear":  # hub.user_rules.clear(): the links are still there
        outpost_ids = instance.user_rules.values_list("outpost_id", flat=True)
    else:
        outpost_ids = UserRule.objects.filter(pk__in=pk_set).values_list("outpost_id", flat=True)
    flavor_terms_changed(outpost_ids=outpost_ids)


def _hub_deleted(sender: Any, instance: Hub, **kwargs: Any) -> None:
    """A rule that named only this Hub applies to every Hub once the Hub is gone (its
    policies' deletion sends their own signals)."""
    flavor_terms_changed(
        outpost_ids=UserRule.objects.filter(hubs=instance).values_list("outpost_id", flat=True)
    )


def connect_receivers() -> None:
    for model in (Flavor, HubPolicy, UserRule):
        post_save.connect(_row_changed, sender=model, dispatch_uid=f"flavor_terms.{model}.save")
        post_delete.connect(_row_changed, sender=model, dispatch_uid=f"flavor_terms.{model}.delete")
    for through in (UserRule.hubs.through, UserRule.flavors.through):
        m2m_changed.connect(
            _rule_links_changed, sender=through, dispatch_uid=f"flavor_terms.{through}"
        )
    pre_delete.connect(_hub_deleted, sender=Hub, dispatch_uid="flavor_terms.hub_deleted")
