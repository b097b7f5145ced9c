"""The audit: who changed what, when, with secrets masked (django-auditlog underneath)."""
