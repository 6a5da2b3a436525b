"""peernet: decentralized deep learning with Momentum Tracking over ZeroMQ."""

__version__ = "0.1.0"
