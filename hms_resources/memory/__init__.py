"""The one door for writes: every memory event HMS stores is built, validated, timestamped and
appended here (`writes.MemoryWriter`), whoever asks: the HTTP service, MCP, chat capture, the CLI,
feedback and the record of what a context returned (`accesses.AccessLog`)."""
