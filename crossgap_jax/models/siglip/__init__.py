"""SigLIP: model (the forward), converter (the loader hooks; transformers and big_vision
files), big_vision name mapping, SentencePiece tokenizer."""
