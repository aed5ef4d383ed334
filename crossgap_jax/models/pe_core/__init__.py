"""Meta's Perception Encoder core (PE-Core) as open_clip's ``PE-Core-*`` models: the
``"pe_core"`` family."""
