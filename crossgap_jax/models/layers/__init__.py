"""Building blocks shared by the model families: attention, ViT layers, module helpers."""
