"""Built-in storage backends (entry-point group ``keyval.storage``)."""
