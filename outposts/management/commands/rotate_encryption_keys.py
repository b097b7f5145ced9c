"""``manage.py rotate_encryption_keys``: re-encrypt stored secrets with the newest key.

Rotation: put a new key first in PORTAL_ENCRYPTION_KEYS (keep the old ones after it), restart
the portal's processes, run this command, then drop the old keys and restart again.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from outposts.provisioning import encrypted_values_rotate


class Command(BaseCommand):
    help = "Re-encrypt every encrypted value with the first key of PORTAL_ENCRYPTION_KEYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="rows per transaction")

    def handle(self, *args: Any, batch_size: int, **options: Any) -> None:
        try:
            counts = encrypted_values_rotate(batch_size=batch_size)
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from None
        for label, count in counts.items():
            self.stdout.write(f"{label}: re-encrypted {count} value(s)")
