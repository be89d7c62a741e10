"""Supervisors' web dashboard (Vietnamese, server-rendered): see docs/DASHBOARD.md."""
