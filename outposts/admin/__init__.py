"""The Django admin for Outposts, Hubs and servers, scoped by object permissions
(outposts/admin/scoping.py). Importing the package registers every admin."""

from outposts.admin import hubs, outposts, servers  # noqa: F401 - registers the admins
