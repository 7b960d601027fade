"""The Textual front end: a thin layer over the core (inventory, tunnels, otp)."""
