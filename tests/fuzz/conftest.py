"""tests/fuzz: schemathesis over the OpenAPI documents of the in-process apps (fakes, no
network), thousands of generated requests: minutes of CPU, so not in tests/unit (docs/testing.md).
The network guard of tests/unit applies here too."""
from helpers.netguard import GUARD, pytest_runtest_setup, pytest_runtest_teardown  # noqa: F401

GUARD.install()
