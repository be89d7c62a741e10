"""Fixture data shared by intake's integration tests (a small agency tree)."""
from datetime import datetime, timezone

PROVINCE, DEPT, COMMUNE, OTHER = "000.00.00.H56", "000.00.17.H56", "000.17.31.H56", "000.00.18.H56"
NOW = datetime(2024, 11, 5, 1, 20, tzinfo=timezone.utc)


def directory_records() -> list[dict]:
    return [
        {"code": PROVINCE, "name": "UBND tỉnh Long An", "parent": None},
        {"code": DEPT, "name": "Sở Tư pháp", "parent": PROVINCE},
        {"code": COMMUNE, "name": "UBND xã Tân Lập", "parent": DEPT},
        {"code": OTHER, "name": "Sở Xây dựng", "parent": PROVINCE},
    ]
