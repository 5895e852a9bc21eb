"""Settings from the environment and the configuration sources: env, SSM, Secrets Manager."""
