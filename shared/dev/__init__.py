"""Developer tooling the service image does not ship: the local stack without Docker and its
mail catcher (localstack), the demo month (demo_month)."""
