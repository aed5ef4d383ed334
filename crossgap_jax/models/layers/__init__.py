"""Building blocks shared by the model families: attention, LayerNorm, ViT layers, module
helpers."""
