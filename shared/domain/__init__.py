"""The domain: the law and the office as code — the working-time calendar (workcal), limits,
instants, the procedure catalog, the agency directory, the legal engine, and the shipped data
they read (shared/data/). Pure: imports no platform module (no Kafka, MongoDB, HTTP, settings)."""
from pathlib import Path

# the shipped reference data: catalog, directory, offices, rule sets, routing policy
PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
