"""Pure renderers (inventory in, text out) and the one module that writes files."""
