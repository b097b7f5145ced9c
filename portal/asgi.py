"""ASGI entry point: the production web server (uvicorn) serves this, so that synchronous
API starts and stops can wait for their task without holding a worker thread."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_asgi_application()
