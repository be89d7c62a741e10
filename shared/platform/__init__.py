"""The platform: configuration, clock, Kafka (messaging, consumer), the MongoDB client factory
(mongo) and the stores built on it (versioned, refdata), HTTP helpers (httpapi, apidoc), API keys
(auth) and the worker runtime."""
