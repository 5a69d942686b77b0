"""Optimal transport and distances between samples (chapters "Optimal transport and
Wasserstein distances", "WGAN and its relatives", "Wasserstein and adversarial autoencoders").

Flat public API, split by topic like POT (``ot.lp``, ``ot.bregman``):

- :mod:`gencore.ot.exact`: exact discrete OT as a linear program (``ot_plan``, ``ot_cost``,
  ``kantorovich_dual``) and closed forms (``wasserstein_1d``, ``gaussian_w2``).
- :mod:`gencore.ot.entropic`: entropic OT (``sinkhorn``), batched, on CPU or GPU.
- :mod:`gencore.ot.sample`: sample-based distances and critic regularisers (``mmd2``,
  ``energy_distance``, ``sliced_wasserstein``, ``gradient_penalty``).
"""
from gencore.ot.exact import *  # noqa: F401,F403
from gencore.ot.entropic import *  # noqa: F401,F403
from gencore.ot.sample import *  # noqa: F401,F403
