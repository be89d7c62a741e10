"""Code patterns the catalog and the event contract share: what a procedure code and a
component (document) id look like."""
import re

PROCEDURE_CODE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
COMPONENT_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
