"""DINOv2 (image-only): model (the forward), converter (the loader hooks)."""
