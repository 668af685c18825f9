"""Async jobs, a role of the router: accepted, queued durably, run through the router's own orchestrator."""
