"""The SCIM 2.0 door: Entra ID's app provisioning pushes who may use calendar sync.

An HTTP surface like ``bot/``: it imports ``workflows``, ``connectors`` and ``core``, never ``bot``
or ``sync``. The protocol (parsing, PATCH, filters, errors) is scim2-server's and scim2-models';
this room adds the storage, the meaning (tickets, through ``workflows.provisioning``) and the
guard (tokens, TLS, size and rate limits, audit).
"""
