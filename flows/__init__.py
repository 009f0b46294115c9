"""Prefect flows, deployments and the `freshrec` command line: they compose stage entrypoints.

This is the only package that imports Prefect.
"""
