"""The contracts between the services: dossier events (events, eventcheck), finding messages
(findings) and dead letters (deadletter). May import the domain, never the platform."""
