"""Which models the audit records, what it masks, and which Outpost each entry belongs to.

Registering a model is one line in ``AUDITED`` (e.g. a project:
``Audited("projects.Project", outpost="outpost_id")``). ``outpost`` is the attribute path
from a row to its Outpost's id; None means the row spans Outposts (Hubs), and its entries are
shown to superusers only. The Outpost id is written into each entry's ``additional_data`` when
the entry is made, so the entries of a deleted flavor stay visible to its Outpost's admins.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from auditlog.signals import pre_log
from django.apps import apps
from django.db.models import Model
from django.db.models.signals import pre_save

from portal.crypto import EncryptedJSONField

MASK = "audit.registry.secret_mask"


@dataclass(frozen=True)
class Audited:
    model: str
    outpost: str | None
    # Credentials: the audit says they changed, never what they hold (encrypted fields are
    # masked without being named here).
    masked: tuple[str, ...] = ()
    # Written by the portal itself on every use (leases, last use): not a change anyone made.
    excluded: tuple[str, ...] = ()
    m2m: tuple[str, ...] = field(default=())
    # The attribute path of the row's project: its managers see the entry too.
    project: str | None = None


AUDITED = [
    Audited("outposts.Outpost", outpost="pk", excluded=("reconcile_lease_until",)),
    Audited("flavors.Flavor", outpost="outpost_id"),
    Audited("flavors.HubPolicy", outpost="outpost_id"),
    Audited("flavors.UserRule", outpost="outpost_id", m2m=("hubs", "flavors")),
    Audited("projects.Project", outpost="outpost_id", project="pk"),
    Audited("projects.Member", outpost="project.outpost_id", project="project_id"),
    Audited("projects.Allocation", outpost="project.outpost_id", project="project_id"),
    Audited("projects.Grant", outpost="project.outpost_id", project="project_id"),
    Audited(
        "outposts.Hub",
        outpost=None,
        masked=("secret_digest",),
        m2m=("outposts",),
    ),
    Audited("outposts.HubAPIKey", outpost=None, masked=("key_digest",), excluded=("last_used_at",)),
    # The key is encrypted (masked without being named); the known hosts are public keys.
    Audited("tunnels.OutpostSSH", outpost="outpost_id", excluded=("updated_at",)),
    # What the agent writes on every check is not a change anyone made.
    Audited(
        "tunnels.Tunnel",
        outpost="outpost_id",
        excluded=(
            "state",
            "opened_generation",
            "failures",
            "last_error",
            "last_check_at",
            "opened_at",
            "updated_at",
        ),
    ),
]

# The Outpost and the project of each audited model's rows, by model class (filled by
# audit_register_all).
_outpost_of: dict[type[Model], Any] = {}
_project_of: dict[type[Model], Any] = {}
# Who acts when no user is logged in (a command, the reconciler): a label in the entries.
_actor_label: ContextVar[str | None] = ContextVar("audit_actor_label", default=None)
# The instance auditlog is about to log: pre_log sees it, LogEntry's pre_save does not.
_logging: ContextVar[Model | None] = ContextVar("audit_logging", default=None)


def secret_mask(value: str) -> str:
    """auditlog's own mask keeps half the value; of a digest or a token, none may show."""
    return "(empty)" if value in ("", "None") else "(hidden)"


def entry_outpost_id(instance: Model) -> int | None:
    """The Outpost id an audit entry about ``instance`` belongs to (None: superusers only)."""
    getter = _outpost_of.get(type(instance))
    return getter(instance) if getter is not None else None


def entry_project_id(instance: Model) -> int | None:
    """The project id an audit entry about ``instance`` belongs to, if any."""
    getter = _project_of.get(type(instance))
    return getter(instance) if getter is not None else None


@contextmanager
def audit_actor(*, label: str) -> Iterator[None]:
    """Name who acts for entries made without a logged-in user, e.g. "apply_config"."""
    token = _actor_label.set(label)
    try:
        yield
    finally:
        _actor_label.reset(token)


def audit_register_all() -> None:
    for audited in AUDITED:
        model = apps.get_model(audited.model)
        _outpost_of[model] = (
            operator.attrgetter(audited.outpost) if audited.outpost else (lambda _row: None)
        )
        if audited.project:
            _project_of[model] = operator.attrgetter(audited.project)
        # Concrete fields only: auditlog would also list reverse relations (a Hub's servers).
        fields = [f.name for f in model._meta.concrete_fields if f.name not in audited.excluded]
        # An encrypted field is masked whether or not its registration remembers to say so.
        encrypted = [f.name for f in model._meta.fields if isinstance(f, EncryptedJSONField)]
        auditlog.register(
            model,
            include_fields=fields,
            mask_fields=sorted({*audited.masked, *encrypted}),
            mask_callable=MASK,
            m2m_fields=set(audited.m2m),
        )
    pre_log.connect(_remember_instance, dispatch_uid="audit_remember_instance")
    pre_save.connect(_scope_entry, sender=LogEntry, dispatch_uid="audit_scope_entry")


def _remember_instance(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    _logging.set(instance)


def _scope_entry(sender: type[LogEntry], instance: LogEntry, **kwargs: Any) -> None:
    if instance.pk is not None:
        return
    data = dict(instance.additional_data or {})
    label = _actor_label.get()
    if label and instance.actor_id is None:
        data.setdefault("actor", label)
    if "outpost_id" not in data:
        row = _row_of_entry(instance)
        data["outpost_id"] = None if row is None else entry_outpost_id(row)
        project_id = None if row is None else entry_project_id(row)
        if project_id is not None:
            data["project_id"] = project_id
    instance.additional_data = data


def _row_of_entry(entry: LogEntry) -> Model | None:
    model = entry.content_type.model_class()
    if model not in _outpost_of:
        return None
    remembered = _logging.get()
    # A deleted row is gone from the database: only the instance auditlog logged knows it.
    if type(remembered) is model and str(remembered.pk) == str(entry.object_pk):
        return remembered
    # m2m changes send no pre_log; their row exists.
    return model._default_manager.filter(pk=entry.object_pk).first()
