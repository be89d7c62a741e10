"""tests/fuzz: generated inputs by the thousand on in-process code (fakes, no network):
schemathesis over the OpenAPI documents of the apps, random combinations of changes to events.
Minutes of CPU, so not in tests/unit (docs/testing.md); the network guard of tests/unit applies
here too."""
from helpers.netguard import guard_folder, pytest_runtest_setup, pytest_runtest_teardown  # noqa: F401

guard_folder(__file__)
