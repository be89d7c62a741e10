"""The three services: intake (counters' API), sla (legal deadlines and findings), notify (alerts)."""
