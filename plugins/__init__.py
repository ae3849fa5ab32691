"""ragloom's built-in components, one module per family, registered by ``builtin``."""
