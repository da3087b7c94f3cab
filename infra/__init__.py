"""The shared layer under the roles: git, Redis store, dedupe, file locks and files, settings."""
