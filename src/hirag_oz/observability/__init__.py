"""Metrics, health and logging of the service."""
