"""Finishing generated headshots: face restoration and other last touches."""
