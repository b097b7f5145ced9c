# The demo Hub's JupyterHub configuration: the dummy authenticator and the hubclient spawner
# against the portal's local Outpost. Started by scripts/demo, which passes where the Hub
# listens and keeps its files (ports, database, cookie secret) on the command line; the
# browser test (tests/browser/) loads this same file into a test Hub.
#
# Read from the environment (scripts/demo sets them from var/demo.env):
#   DEMO_PORTAL_URL      the portal's base URL, e.g. http://127.0.0.1:8000
#   DEMO_HUB_SECRET      this Hub's secret at the portal (Hub record "demo-hub")
#   DEMO_USER_PASSWORD   the password every demo user logs in with
#   DEMO_HUB_ADMIN       the user name of the Hub's admin (/hub/admin), with that password too
import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

# Any user name, one shared password: a local demo, not an identity provider.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["DEMO_USER_PASSWORD"]
c.Authenticator.allow_all = True
# Someone must be able to open /hub/admin (users, their servers, the Hub's own view of them).
c.Authenticator.admin_users = {os.environ["DEMO_HUB_ADMIN"]}
c.JupyterHub.allow_named_servers = True

# Servers start through the portal (hubclient, installed from hubclient/).
c.JupyterHub.spawner_class = "outpost-portal"
c.OutpostPortalSpawner.hub_name = "demo-hub"
c.OutpostPortalSpawner.outposts = {
    "local": {
        "url": os.environ["DEMO_PORTAL_URL"].rstrip("/") + "/outposts/local/",
        "display_name": "Local processes (this machine)",
        # Read at each request: the secret never appears in this file.
        "secret_env": "DEMO_HUB_SECRET",
    },
}
c.OutpostPortalSpawner.events_poll_interval = 1.0
# Local processes are up in seconds; a real batch system would want minutes.
c.OutpostPortalSpawner.start_timeout = 120
c.Spawner.http_timeout = 60

# Users land in JupyterLab (requirements/dev.in; the Hub and the servers share the venv here).
c.Spawner.default_url = "/lab"
