"""The operations people ask for, under every surface (command line, HTTP API, pages, flows).

Each service takes typed requests, checks the actor's permission, writes its own audit
events and returns typed results; surfaces parse, call a service and render. Services
raise `services.errors.ServiceError` (a field and a rule, never a value) for anything a
caller can cause.
"""
