"""Find the packets, not the files: the packet index and the query over it."""
