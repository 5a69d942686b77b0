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
from gencore.diffusion.ddpm import ddim_sample, ddpm_sample, eps_loss, eps_to_score, predict_x0
from gencore.diffusion.flow_matching import (cfm_loss, cnf_log_prob, gaussian_path_velocity, ode_sample,
                                             ot_pairing)
from gencore.diffusion.schedules import NoiseSchedule, cosine_schedule, linear_schedule
from gencore.diffusion.score import (annealed_langevin, dsm_loss, langevin, mixture_log_prob,
                                     mixture_score)

__all__ = [
    "NoiseSchedule", "linear_schedule", "cosine_schedule",
    "eps_loss", "predict_x0", "eps_to_score", "ddpm_sample", "ddim_sample",
    "dsm_loss", "langevin", "annealed_langevin", "mixture_log_prob", "mixture_score",
    "cfm_loss", "ot_pairing", "ode_sample", "cnf_log_prob", "gaussian_path_velocity",
]
