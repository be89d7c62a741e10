"""The contracts between the services: dossier events (events, eventcheck), finding messages
(findings), dead letters (deadletter) and the alerting read model notify keeps for the others
(alerting). May import the domain, never the platform."""
