"""Gateway tests: a real server, real clients."""
