"""CLIP (OpenAI / open_clip / transformers): model (the forward), reader and converter
(the loader hooks), BPE tokenizer."""
