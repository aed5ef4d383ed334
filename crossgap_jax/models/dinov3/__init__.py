"""DINOv3 ViT (image-only): model (the forward), converter (the loader hooks)."""
