"""SSH tunnels as records (filled in by the tunnels issue)."""
