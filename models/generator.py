"""What every style-based generator here shares: the mapping network, truncation, style mixing,
noise inputs (random, given, or the constant noise stored with the model), and the call signature
``G(z, ...)``."""
import torch
from torch import nn

from .layers import MappingNetwork

NOISE_MODES = ("random", "const")


class ConstantNoise(nn.Module):
    """The noise of ``G(z, noise="const")``: one (1, 1, H, W) buffer per StyledConv, ``noise_0``,
    ``noise_1``, ... in forward order, under the generator's ``noises`` (rosinality's names: its
    checkpoints' ``noises.noise_i`` load key for key). Drawn once from a fixed seed of its own (the
    global RNG is untouched, so a model's weights do not depend on it), or set from a converted
    network. A state dict without them (official PixelFolder checkpoints, ours from before this mode)
    loads and keeps these."""

    SEED = 0

    def __init__(self, shapes):
        super().__init__()
        rng = torch.Generator().manual_seed(self.SEED)
        for index, shape in enumerate(shapes):
            noise = torch.randn(shape, generator=rng, device="cpu")
            self.register_buffer(f"noise_{index}", noise.to(torch.get_default_device()))
        self.register_load_state_dict_pre_hook(self._keep_where_missing)

    @staticmethod
    def _keep_where_missing(module, state_dict, prefix, *args):
        for name, buffer in module.named_buffers(recurse=False):
            state_dict.setdefault(prefix + name, buffer)

    def tensors(self):
        return [getattr(self, f"noise_{index}") for index in range(len(self._buffers))]


class StyleGenerator(nn.Module):
    """Subclasses build ``self.style`` through ``super().__init__``, set ``n_latent`` (style vectors
    per image) and ``size``, define ``noise_shapes(batch)`` and ``synthesis(latent, noise)``, and
    end their ``__init__`` with ``self.noises = ConstantNoise(self.noise_shapes(1))``."""

    n_latent = 1

    def __init__(self, style_dim=512, n_mlp=8, lr_mlp=0.01):
        super().__init__()
        self.style_dim = style_dim
        self.style = MappingNetwork(style_dim, n_mlp, lr_mlp)
        # A converted network's own average w (NVlabs' w_avg, rosinality's latent_avg), the centre of
        # its truncation; None (and not in the state dict) for the models trained here.
        self.register_buffer("latent_avg", None)
        self.register_load_state_dict_pre_hook(self._take_latent_avg)

    @staticmethod
    def _take_latent_avg(module, state_dict, prefix, *args):
        saved = state_dict.get(prefix + "latent_avg")
        if saved is not None and module.latent_avg is None:
            param = next(module.parameters())
            module.latent_avg = torch.empty(saved.shape, dtype=param.dtype, device=param.device)

    @torch.no_grad()
    def mean_latent(self, n_samples=4096, seed=0):
        """The centre for truncation (1, style_dim): the network's own average w where it has one
        (``latent_avg``, from a converted network), else the mean w over ``n_samples`` z drawn from a
        fixed seed."""
        if self.latent_avg is not None:
            return self.latent_avg[None]
        param = next(self.parameters())
        generator = torch.Generator(device="cpu").manual_seed(seed)
        z = torch.randn(n_samples, self.style_dim, generator=generator).to(param.device, param.dtype)
        return self.style(z).mean(0, keepdim=True)

    def noise_shapes(self, batch):
        """Shapes of the noise tensors, one per StyledConv in forward order."""
        raise NotImplementedError

    def constant_noise(self):
        """The noise ``noise="const"`` uses: one (1, 1, H, W) tensor per StyledConv."""
        return self.noises.tensors()

    def make_noise(self, batch, device=None, generator=None):
        """Fresh N(0, 1) noise for every StyledConv, to pass as ``noise=``."""
        device = device or next(self.parameters()).device
        return [torch.randn(shape, device=device, generator=generator) for shape in self.noise_shapes(batch)]

    def latents(self, z, truncation=1.0, truncation_latent=None, input_is_latent=False, inject_index=None):
        """(B, n_latent, style_dim) from one z (or w), or two for style mixing."""
        codes = list(z) if isinstance(z, (list, tuple)) else [z]
        if not 1 <= len(codes) <= 2:
            raise ValueError(f"{type(self).__name__}: argument 'z' must be a tensor or a list of two "
                             f"(style mixing), got a list of {len(codes)}")
        for code in codes:
            if code.dim() != 2 or code.shape[1] != self.style_dim:
                raise ValueError(f"{type(self).__name__}: argument 'z' must be of shape (B, {self.style_dim}), "
                                 f"got {tuple(code.shape)}")
        styles = codes if input_is_latent else [self.style(code) for code in codes]
        if truncation != 1:
            if truncation_latent is None:
                truncation_latent = self.mean_latent()
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) == 1:
            return styles[0][:, None].expand(-1, self.n_latent, -1)
        if self.n_latent < 2:
            raise ValueError(f"{type(self).__name__} takes one style vector for every layer: "
                             f"style mixing (a list of two z) does not apply")
        if inject_index is None:
            inject_index = int(torch.randint(1, self.n_latent, ()))
        return torch.cat([styles[0][:, None].expand(-1, inject_index, -1),
                          styles[1][:, None].expand(-1, self.n_latent - inject_index, -1)], dim=1)

    def _check_noise(self, noise, batch):
        if isinstance(noise, str):
            if noise not in NOISE_MODES:
                raise ValueError(f"{type(self).__name__}: argument 'noise' must be one of {', '.join(NOISE_MODES)}, "
                                 f"a list of tensors or None, got {noise!r}")
            noise = self.constant_noise() if noise == "const" else None
        if noise is None:
            return [None] * len(self.noise_shapes(batch))
        shapes = self.noise_shapes(batch)
        if len(noise) != len(shapes):
            raise ValueError(f"{type(self).__name__}: argument 'noise' must be a list of {len(shapes)} tensors "
                             f"(one per StyledConv), got {len(noise)}")
        for index, (tensor, shape) in enumerate(zip(noise, shapes)):
            if tuple(tensor.shape) not in (tuple(shape), (1,) + tuple(shape[1:])):
                raise ValueError(f"{type(self).__name__}: argument 'noise[{index}]' must be of shape "
                                 f"{tuple(shape)}, got {tuple(tensor.shape)}")
        return list(noise)

    def forward(self, z, truncation=1.0, truncation_latent=None, noise=None, return_stages=False,
                input_is_latent=False, inject_index=None):
        """Images (B, 3, size, size) for latent codes ``z`` (B, style_dim), or a list of two for
        style mixing. ``noise``: "random" (or None: fresh random noise), "const" (the noise stored
        with the model, ``constant_noise()``: the same for every image and call) or a list with one
        tensor per StyledConv (see ``noise_shapes``). ``return_stages``: also return the RGB of every stage."""
        latent = self.latents(z, truncation, truncation_latent, input_is_latent, inject_index)
        image, stages = self.synthesis(latent, self._check_noise(noise, latent.shape[0]))
        return (image, stages) if return_stages else image
