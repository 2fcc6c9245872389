"""Backends run op batches and gathers on one machine: the twin, or agent.ps1 remotely."""
