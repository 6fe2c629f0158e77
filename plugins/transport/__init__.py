"""Built-in transport backends (entry-point group ``keyval.transport``)."""
