"""Small helpers shared across rsvit's packages (no torch at import time)."""
