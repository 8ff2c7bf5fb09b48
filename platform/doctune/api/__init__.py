"""The REST API: routes translate HTTP to service calls, and DoctuneErrors to HTTP."""
