"""Helpers and fixtures shared by the tests: plain modules that tests and conftest files import.

Modules the hubclient's unit tests import (contract, fake_portal, hubclient, processes,
jupyterhub) never import Django, as the hubclient does not.
"""
