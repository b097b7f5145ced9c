"""End-to-end fixtures: a real Celery worker and a real uvicorn (tests/support/portal.py), a real
Slurm, the fake Kubernetes API (tests/support/fake_kube.py); the stand-in Hub ``fake_hub``
comes from tests/conftest.py."""

from tests.support.admin import site_admin, two_outposts  # noqa: F401 - fixtures
from tests.support.fake_kube import fake_kube, fake_kube_server  # noqa: F401 - fixtures
from tests.support.portal import celery_worker, portal_web  # noqa: F401 - fixtures
from tests.support.processes import home  # noqa: F401 - fixture
from tests.support.slurm import slurm_cluster  # noqa: E402, F401 - fixture
