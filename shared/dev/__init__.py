"""Developer tooling the service image does not ship: the local stack without Docker
(`localstack`, built from `stackconfig`, `provision`, `supervisor`, `health`, `infra`) and its
mail catcher (`mailcatcher`), the demo month (`demo_month`)."""
