"""Embedded default services (`freshrec infra up|down|status`) and manifests for real clusters."""
