"""crossgap_jax: modality inversion (OTI/OVI) for CLIP in JAX/Flax."""

__version__ = "0.1.0"
