"""The relay: the gevent server that carries user traffic on /v1/*.

Import-light on purpose: the control plane imports pure modules from here (snapshot, pricing,
adapters), and gevent is monkey-patched only by a process entry point, never by an import.
"""
