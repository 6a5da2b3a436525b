"""Security: CURVE keys, allowlists and hostile inputs."""
