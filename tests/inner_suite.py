"""An inner pytest session of findings, driven the way a user drives the suite (pytester)."""

from __future__ import annotations


def findings_suite(pytester, *addopts: str):
    """A pytester folder whose sessions load the plugin, with strict markers and `addopts`."""
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]')
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider " + " ".join(addopts) + "\n")
    return pytester


def run_findings(suite, source: str, *args: str):
    """Write `source` as test_findings.py and run it in-process with a low effect floor and no progress bar."""
    suite.makepyfile(test_findings=source)
    return suite.runpytest("--ft-min-gain", "0.01", "--ft-no-progress", *args)
