"""Which Unix account on the Outpost's host a Hub user's batch job runs as.

One rule per Outpost (Outpost.unix_user_rule): the Hub user's name itself, a template such as
``hpc_{name}``, or a lookup table. This module is the one place it is applied (the runner
calls ``UnixAccountRule.account_for``) and validated (Outpost.clean calls ``errors``). No
Django here.

The account goes into batchspawner's ``exec_prefix`` (``sudo -E -u {username}``), a shell
command line: so every account, whichever rule made it, must be a plain POSIX name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from outposts.runner.checks import SystemAccount

# A portable POSIX user name (useradd's default NAME_REGEX, with upper case and dots): no
# shell metacharacter, no leading "-" that sudo would read as an option.
UNIX_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
RULES = ("name", "template", "table")
# The only placeholders a template may hold: str.format would also reach attributes
# ("{name.__class__}"), so they are replaced literally instead.
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
TEMPLATE_NAMES = {"name"}


class NoUnixAccount(SystemAccount):
    """The Outpost's rule gives this Hub user no usable Unix account: the start is refused."""


@dataclass(frozen=True)
class UnixAccountRule:
    """An Outpost's rule from Hub user names to Unix accounts."""

    rule: str = "name"
    template: str = ""
    table: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_outpost(cls, outpost: Any) -> UnixAccountRule:
        return cls(
            rule=outpost.unix_user_rule or "name",
            template=outpost.unix_user_template or "",
            table=dict(outpost.unix_user_table or {}),
        )

    def errors(self) -> dict[str, str]:
        """What is wrong with the rule, by Outpost field name ({} = valid)."""
        if self.rule not in RULES:
            return {"unix_user_rule": f"Must be one of {', '.join(RULES)}."}
        if self.rule == "template":
            names = set(PLACEHOLDER.findall(self.template))
            if not names or names - TEMPLATE_NAMES:
                return {"unix_user_template": "Must contain {name} and no other placeholder."}
            if not UNIX_NAME.match(PLACEHOLDER.sub("x", self.template)):
                return {"unix_user_template": "Must make a plain Unix name, e.g. hpc_{name}."}
        if self.rule == "table":
            if not isinstance(self.table, Mapping) or not self.table:
                return {"unix_user_table": "Must be a JSON object of Hub user names to accounts."}
            bad = [
                str(value)
                for value in self.table.values()
                if not isinstance(value, str) or not UNIX_NAME.match(value)
            ]
            if bad:
                return {"unix_user_table": f"Not a plain Unix name: {bad[0]!r}."}
        return {}

    def account_for(self, hub_user: str) -> str:
        """The Unix account of ``hub_user``; raises NoUnixAccount when there is none."""
        if self.rule == "table":
            account = self.table.get(hub_user)
            if account is None:
                raise NoUnixAccount(f"{hub_user} has no account on this Outpost.")
        elif self.rule == "template":
            account = PLACEHOLDER.sub(lambda _: hub_user, self.template)
        else:
            account = hub_user
        if not isinstance(account, str) or not UNIX_NAME.match(account):
            raise NoUnixAccount(f"{hub_user} has no valid account name on this Outpost.")
        return account
