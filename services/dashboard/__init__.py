"""Supervisors' web dashboard (Vietnamese, server-rendered): see docs/dashboard.md."""
