"""Common code of the một cửa dossier tracking services, in layers (docs/architecture.md):
domain (calendar, limits, catalog, directory, legal engine; pure), contracts (events, findings,
dead letters), platform (config, clock, Kafka, MongoDB, HTTP, auth, runtime, reference-data
stores), cli (the `motcua` command) and dev (local stack, demo; not in the service image)."""
