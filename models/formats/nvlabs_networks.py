"""StyleGAN2 as NVlabs' stylegan2-ada-pytorch and stylegan3 name and compute it (config F: a `skip`
generator, a `resnet` discriminator), written here from the published architecture in plain PyTorch.

This module stands alone (torch only): `training.convert --to nvlabs` embeds its source in the
pickles it writes, as NVlabs' `torch_utils.persistence` embeds a network's module source, so that
NVlabs' `legacy.load_network_pkl` builds these classes and the networks run anywhere NVlabs' tools
do. The classes take NVlabs' constructor arguments and have NVlabs' parameter, buffer and attribute
names, and the calls NVlabs' scripts make: `G(z, c, truncation_psi, truncation_cutoff,
noise_mode=...)`, `G.mapping(z, c, ...)`, `G.synthesis(ws, noise_mode=...)`, `D(img, c)`. They run in
float32 (NVlabs' float16 layers are an approximation of this), unconditional only. The tests also
use them as the reference for NVlabs' architecture.

Per layer: weights are stored N(0, 1) (linear ones divided by the learning-rate multiplier) and
scaled at run time (`weight_gain`); a modulated conv scales its input channels by styles = affine(w)
and, where it demodulates, each output channel by rsqrt(sum of squared modulated weights + 1e-8);
activations are leaky ReLU (slope 0.2) times sqrt 2 (times the caller's `gain`), clamped to
+-conv_clamp * gain; resampling filters are the outer product of [1, 3, 3, 1], normalised to sum 1.
"""
import math

import torch
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2)


def setup_filter(taps=(1, 3, 3, 1)):
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def fir(x, f, pad, gain=1.0):
    """Pad (before, after) on both axes, then filter every channel with ``f`` (a symmetric kernel)."""
    channels = x.shape[1]
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    kernel = (f * gain).to(x.dtype)[None, None].expand(channels, 1, *f.shape)
    return F.conv2d(x, kernel, groups=channels)


def upsample2d(x, f):
    """x2 upsampling: zeros between the pixels, then the filter times 4, padded (2, 1)."""
    batch, channels, height, width = x.shape
    up = x.new_zeros(batch, channels, height, 2, width, 2)
    up[:, :, :, 0, :, 0] = x
    return fir(up.view(batch, channels, 2 * height, 2 * width), f, (2, 1), gain=4.0)


def bias_act(x, bias=None, activation="linear", gain=None, clamp=None):
    if bias is not None:
        x = x + bias.view(1, -1, *[1] * (x.dim() - 2)).to(x.dtype)
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = LRELU_GAIN if gain is None else gain
    elif activation != "linear":
        raise ValueError(f"unsupported activation {activation!r}")
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def modulated_conv2d(x, weight, styles, demodulate=True, up=1, padding=0, resample_filter=None):
    """The per-image modulated (and demodulated) conv, as one grouped conv over the batch; ``up`` 2:
    a stride-2 transposed conv, then the filter (times 4) padded (1, 1)."""
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w = weight[None] * styles.view(batch, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().view(batch, out_channels, 1, 1, 1)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw), padding=padding, groups=batch)
    else:
        w = w.transpose(1, 2).reshape(batch * in_channels, out_channels, kh, kw)
        x = F.conv_transpose2d(x, w, stride=2, groups=batch)
        x = fir(x, resample_filter, (1, 1), gain=4.0)
    return x.reshape(batch, out_channels, *x.shape[2:])


class NetworkModule(torch.nn.Module):
    """Keeps the constructor's arguments as NVlabs' persistent classes do (``init_args`` /
    ``init_kwargs``), so that NVlabs' tools can build another one like it."""

    def __init__(self, args, kwargs):
        super().__init__()
        self._init_args = tuple(args)
        self._init_kwargs = dict(kwargs)


class FullyConnectedLayer(NetworkModule):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1, bias_init=0):
        super().__init__((in_features, out_features), dict(bias=bias, activation=activation,
                                                          lr_multiplier=lr_multiplier, bias_init=bias_init))
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b[None], x, w.t())
        return bias_act(x.matmul(w.t()), b, self.activation)


class Conv2dLayer(NetworkModule):
    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False, trainable=True):
        super().__init__((in_channels, out_channels, kernel_size),
                         dict(bias=bias, activation=activation, up=up, down=down, resample_filter=list(resample_filter),
                              conv_clamp=conv_clamp, channels_last=channels_last, trainable=trainable))
        if up != 1 or down not in (1, 2):
            raise ValueError("Conv2dLayer: only down-sampling by 2 is supported here")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation = activation
        self.up, self.down = up, down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1):
        w = (self.weight * self.weight_gain).to(x.dtype)
        if self.down == 2:
            # Filter, then a stride-2 conv: pads that centre the filter and the kernel together.
            p = self.resample_filter.shape[-1] - 2 + w.shape[-1] - 1
            x = F.conv2d(fir(x, self.resample_filter, ((p + 1) // 2, p // 2)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(NetworkModule):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__((), dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
                                  activation=activation, lr_multiplier=lr_multiplier, w_avg_beta=w_avg_beta))
        if c_dim != 0 or z_dim == 0:
            raise ValueError("MappingNetwork: only unconditional networks (c_dim 0, z_dim > 0) are supported here")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws, self.num_layers, self.w_avg_beta = num_ws, num_layers, w_avg_beta
        features = [z_dim] + [layer_features or w_dim] * (num_layers - 1) + [w_dim]
        for index in range(num_layers):
            setattr(self, f"fc{index}", FullyConnectedLayer(features[index], features[index + 1], activation=activation,
                                                            lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False,
                skip_w_avg_update=False):
        z = z.to(torch.float32)
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(NetworkModule):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False):
        super().__init__((in_channels, out_channels), dict(w_dim=w_dim, resolution=resolution, kernel_size=kernel_size,
                                                           up=up, use_noise=use_noise, activation=activation,
                                                           resample_filter=list(resample_filter),
                                                           conv_clamp=conv_clamp, channels_last=channels_last))
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", fused_modconv=True, gain=1):
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            x = x + noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(NetworkModule):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__((in_channels, out_channels, w_dim), dict(kernel_size=kernel_size, conv_clamp=conv_clamp,
                                                                  channels_last=channels_last))
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(NetworkModule):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 fused_modconv_default=True, **layer_kwargs):
        super().__init__((in_channels, out_channels), dict(w_dim=w_dim, resolution=resolution,
                                                           img_channels=img_channels, is_last=is_last,
                                                           architecture=architecture, conv_clamp=conv_clamp,
                                                           **layer_kwargs))
        if architecture != "skip":
            raise ValueError(f"SynthesisBlock: only the 'skip' architecture is supported here, got {architecture!r}")
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16, self.channels_last = False, False
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv, self.num_torgb = 0, 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        w = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(torch.float32)[None].repeat([ws.shape[0], 1, 1, 1])
        else:
            x = self.conv0(x.to(torch.float32), next(w), **layer_kwargs)
        x = self.conv1(x, next(w), **layer_kwargs)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w))
        return x, (y if img is None else img + y)


class SynthesisNetwork(NetworkModule):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__((), dict(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                  channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                                  **block_kwargs))
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws, **block_kwargs):
        ws = ws.to(torch.float32)
        x = img = None
        first = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, first, block.num_conv + block.num_torgb), **block_kwargs)
            first += block.num_conv
        return img


class Generator(NetworkModule):
    """The synthesis settings as keywords (stylegan3, and how ``init_kwargs`` keeps them) or as one
    ``synthesis_kwargs`` dict (stylegan2-ada-pytorch), which wins where both give one."""

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, synthesis_kwargs=None,
                 **more_synthesis_kwargs):
        synthesis_kwargs = {**more_synthesis_kwargs, **(synthesis_kwargs or {})}
        super().__init__((), dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                  img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}),
                                  **synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)


class DiscriminatorBlock(NetworkModule):
    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture="resnet", activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        super().__init__((in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx),
                         dict(architecture=architecture, activation=activation, conv_clamp=conv_clamp))
        if architecture != "resnet":
            raise ValueError(f"DiscriminatorBlock: only the 'resnet' architecture is supported here, "
                             f"got {architecture!r}")
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.architecture = first_layer_idx, architecture
        self.use_fp16, self.channels_last = False, False
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 3 + (in_channels == 0)
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                resample_filter=resample_filter)

    def forward(self, x, img, force_fp32=False):
        if self.in_channels == 0:
            x = self.fromrgb(img.to(torch.float32))
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x, None


class MinibatchStdLayer(NetworkModule):
    def __init__(self, group_size, num_channels=1):
        super().__init__((group_size,), dict(num_channels=num_channels))
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = n if self.group_size is None else min(self.group_size, n)
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        return torch.cat([x, y.repeat(g, 1, h, w)], dim=1)


class DiscriminatorEpilogue(NetworkModule):
    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture="resnet", mbstd_group_size=4,
                 mbstd_num_channels=1, activation="lrelu", conv_clamp=None):
        super().__init__((in_channels, cmap_dim, resolution, img_channels),
                         dict(architecture=architecture, mbstd_group_size=mbstd_group_size,
                              mbstd_num_channels=mbstd_num_channels, activation=activation, conv_clamp=conv_clamp))
        if cmap_dim != 0:
            raise ValueError("DiscriminatorEpilogue: only unconditional networks (cmap_dim 0) are supported here")
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.img_channels, self.architecture = img_channels, architecture
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x, img, cmap, force_fp32=False):
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.out(self.fc(self.conv(x).flatten(1)))


class Discriminator(NetworkModule):
    def __init__(self, c_dim, img_resolution, img_channels, architecture="resnet", channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs=None,
                 mapping_kwargs=None, epilogue_kwargs=None):
        super().__init__((), dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                  architecture=architecture, channel_base=channel_base, channel_max=channel_max,
                                  num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                                  block_kwargs=dict(block_kwargs or {}), mapping_kwargs=dict(mapping_kwargs or {}),
                                  epilogue_kwargs=dict(epilogue_kwargs or {})))
        if c_dim != 0:
            raise ValueError("Discriminator: only unconditional networks (c_dim 0) are supported here")
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        first_layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, img_channels=img_channels, first_layer_idx=first_layer_idx,
                                       architecture=architecture, conv_clamp=conv_clamp, **(block_kwargs or {}))
            setattr(self, f"b{res}", block)
            first_layer_idx += block.num_layers
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=0, resolution=4, img_channels=img_channels,
                                        architecture=architecture, conv_clamp=conv_clamp, **(epilogue_kwargs or {}))

    def forward(self, img, c=None, update_emas=False, **block_kwargs):
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img)
        return self.b4(x, img, None)
