"""The instant virtual clocks of the tests start at."""
from datetime import datetime, timezone

# a Tuesday, 09:00 in Hà Nội: inside office hours, not a holiday
VIRTUAL_START = datetime(2024, 11, 5, 2, 0, tzinfo=timezone.utc)
