"""Prefect flows and the runtime a flow run assembles from its environment."""
