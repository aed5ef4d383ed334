"""``python -m crossgap_jax.experiment``: see :mod:`crossgap_jax.experiment.run`."""

from crossgap_jax.experiment.run import main

main()
