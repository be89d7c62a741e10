"""The sla service."""
