"""The sandbox tenant: a local stand-in for Entra ID, Graph, Exchange and Bot Framework auth.

It is a separate program. Product code never imports it; tests and `make run` start it.
"""
