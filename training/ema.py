"""The generator's exponential moving average (the model that samples and is evaluated)."""
import torch


def ema_decay(batch, half_life_images):
    """Decay per step such that the weight of a step halves every ``half_life_images`` images."""
    return 0.5 ** (batch / half_life_images)


@torch.no_grad()
def update_ema(ema_model, model, decay):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for ema_parameter, parameter in zip(ema_model.parameters(), model.parameters()):
        ema_parameter.lerp_(parameter, 1 - decay)
