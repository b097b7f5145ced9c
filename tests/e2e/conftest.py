"""End-to-end fixtures: a real Celery worker, a real uvicorn, a stand-in Hub (see support.py)."""

from tests.e2e.support import celery_worker, fake_hub, portal_web  # noqa: F401 - fixtures
