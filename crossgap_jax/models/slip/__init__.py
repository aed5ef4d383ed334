"""SLIP: model (the forward; text tower and tokenizer are CLIP's), converter (the loader
hooks)."""
