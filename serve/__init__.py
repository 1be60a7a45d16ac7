"""The HTTP API on Ray Serve (FastAPI): submit and inspect workflow runs, with API keys and roles from the store.

Not built yet; the CLI and the Python API (`orchestrator.runtime`) are the interfaces today.
"""
