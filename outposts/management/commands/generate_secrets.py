"""``manage.py generate_secrets``: fresh PORTAL_SECRET_KEY, PORTAL_CREDENTIAL_KEY and
PORTAL_ENCRYPTION_KEYS lines.

Settings refuse to load without secrets unless PORTAL_DEBUG is on, so on a fresh machine run
``PORTAL_DEBUG=1 python manage.py generate_secrets >> .env``.
"""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Print a fresh PORTAL_SECRET_KEY, PORTAL_CREDENTIAL_KEY and PORTAL_ENCRYPTION_KEYS in "
        ".env format."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"PORTAL_SECRET_KEY={secrets.token_urlsafe(50)}")
        self.stdout.write(f"PORTAL_CREDENTIAL_KEY={secrets.token_urlsafe(50)}")
        self.stdout.write(f"PORTAL_ENCRYPTION_KEYS={Fernet.generate_key().decode()}")
