"""Dataset sources, splitting, and the spool and shards the prepared splits go through."""
