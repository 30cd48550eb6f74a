"""Fake upstream providers speaking the real wire formats over real sockets, with fault injection."""
