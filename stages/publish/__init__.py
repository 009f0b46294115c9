"""The publish stage. See its README section and the core/adapters split in HOUSE_STYLE."""
