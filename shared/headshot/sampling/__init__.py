"""Sampling: the `Sampler` protocol hosts implement, and the diffusers machinery for standalone use.

Below generate and finish, so both ask for pictures through the same protocol without importing each other.
"""
