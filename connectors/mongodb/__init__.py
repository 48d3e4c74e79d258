"""MongoDB collections."""
