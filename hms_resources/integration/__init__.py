"""Memory in the model call: the plugin interface, the local model with per-user adapters, capture and provider plugins."""
