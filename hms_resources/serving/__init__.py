"""HMS as a service: the HTTP API and the MCP server over the same event store and context resource,
behind API keys per tenant."""
