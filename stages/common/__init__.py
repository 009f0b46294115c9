"""What every stage shares: record contracts, settings, errors and feature-id hashing.

Imports nothing of the project above it (enforced by import-linter, see pyproject.toml).
"""
