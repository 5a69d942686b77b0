"""Score-based models, denoising diffusion and flow matching (the part after the flows chapter).

- :mod:`gencore.diffusion.schedules`: noise schedules (linear, cosine), the forward process
  :math:`q(x_t \\mid x_0)` and its posterior :math:`q(x_{t-1} \\mid x_t, x_0)`;
- :mod:`gencore.diffusion.ddpm`: the ε-prediction loss, DDPM ancestral and DDIM samplers;
- :mod:`gencore.diffusion.score`: denoising score matching, Langevin and annealed Langevin
  dynamics, exact scores of Gaussian mixtures;
- :mod:`gencore.diffusion.flow_matching`: conditional flow matching, mini-batch OT couplings,
  ODE sampling and the log-density of a continuous normalizing flow.

Samplers take the number of steps and a ``torch.Generator`` and follow their inputs' device.
"""
from gencore.diffusion import ddpm, flow_matching, nets, schedules, score
from gencore.diffusion.ddpm import *  # noqa: F401,F403  (each submodule's __all__)
from gencore.diffusion.flow_matching import *  # noqa: F401,F403
from gencore.diffusion.nets import *  # noqa: F401,F403
from gencore.diffusion.schedules import *  # noqa: F401,F403
from gencore.diffusion.score import *  # noqa: F401,F403

__all__ = [name for module in (schedules, ddpm, score, flow_matching, nets) for name in module.__all__]
