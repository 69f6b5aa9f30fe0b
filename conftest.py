"""Registers the plugin in fixtures/ for every test under this folder."""

pytest_plugins = ["fixtures.plugin"]
