"""Gaussian diffusion for the DiT family: schedules, respacing, losses, jitted samplers.

``create_diffusion`` mirrors the official DiT ``diffusion.create_diffusion`` arguments.
"""

from jaxlab.diffusion.gaussian import GaussianDiffusion, LossType, ModelMeanType, ModelVarType, respaced_betas
from jaxlab.diffusion.sampling import SAMPLERS, make_sample_fn, sample_loop
from jaxlab.diffusion.schedules import NOISE_SCHEDULES, get_named_beta_schedule, space_timesteps


def create_diffusion(
    timestep_respacing: str | list[int] | None = "",
    noise_schedule: str = "linear",
    use_kl: bool = False,
    sigma_small: bool = False,
    predict_xstart: bool = False,
    learn_sigma: bool = True,
    rescale_learned_sigmas: bool = False,
    diffusion_steps: int = 1000,
) -> GaussianDiffusion:
    """The diffusion DiT trains and samples with, as the reference's ``create_diffusion``.

    ``timestep_respacing``: ``""``/None = all ``diffusion_steps``; ``"250"`` or ``"a,b,c"`` =
    evenly strided sections; ``"ddim50"`` = an integer stride from 0. The chain is always
    rebuilt from the kept steps, so even the full chain's betas are ``1 - abar_i / abar_{i-1}``.
    """
    if diffusion_steps <= 0:
        raise ValueError(f"diffusion_steps must be positive, got {diffusion_steps}")
    base_betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
    if use_kl:
        loss_type = LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = LossType.RESCALED_MSE
    else:
        loss_type = LossType.MSE
    if timestep_respacing is None or timestep_respacing == "":
        timestep_respacing = [diffusion_steps]
    base = GaussianDiffusion(
        betas=base_betas,
        timestep_map=range(diffusion_steps),
        model_mean_type=ModelMeanType.EPSILON,
        model_var_type=ModelVarType.FIXED_LARGE,
        loss_type=loss_type,
    )
    betas, timestep_map = respaced_betas(base.alphas_cumprod, space_timesteps(diffusion_steps, timestep_respacing))
    if learn_sigma:
        var_type = ModelVarType.LEARNED_RANGE
    else:
        var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
    return GaussianDiffusion(
        betas=betas,
        timestep_map=timestep_map,
        model_mean_type=ModelMeanType.START_X if predict_xstart else ModelMeanType.EPSILON,
        model_var_type=var_type,
        loss_type=loss_type,
    )


__all__ = [
    "GaussianDiffusion",
    "LossType",
    "ModelMeanType",
    "ModelVarType",
    "NOISE_SCHEDULES",
    "SAMPLERS",
    "create_diffusion",
    "get_named_beta_schedule",
    "make_sample_fn",
    "sample_loop",
    "space_timesteps",
]
