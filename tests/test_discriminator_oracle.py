"""The residual discriminator against its data flow written out on the state dict with F.* calls
(docs/design.md, section 4; nothing from models/): the logits, the R1 gradient with respect to the
images, and the gradient of the R1 penalty with respect to the weights (the double backward the
trainer's lazy R1 step takes), on every CPU backend."""
import pytest
import torch
import torch.nn.functional as F

import models
import pixelfolder_ops as ops
from helpers import SQRT2, blur, equal_conv, lrelu

SIZE = 16


def minibatch_stddev(x, group_size=4):
    """One more feature map: image n belongs to the group {m, m + M, m + 2M, ...} (M = B / group,
    m = n mod M); the feature is the std over that group (biased, + 1e-8 under the root), averaged
    over channels and pixels."""
    batch, _, height, width = x.shape
    groups = batch // min(batch, group_size)
    per_group = torch.stack([torch.sqrt(x[m::groups].var(0, unbiased=False) + 1e-8).mean() for m in range(groups)])
    feature = per_group[torch.arange(batch) % groups]
    return torch.cat([x, feature.view(batch, 1, 1, 1).expand(batch, 1, height, width)], dim=1)


def subsample(x):
    """Every other pixel: a stride-2 conv is the stride-1 conv subsampled (and so its float64 double
    backward avoids PyTorch's slow dilated-conv path)."""
    return x[:, :, ::2, ::2]


def official_discriminator(sd, images):
    """1x1 ConvLayer from RGB; per ResBlock: 3x3 ConvLayer, blur (2, 2) + stride-2 3x3 ConvLayer, and
    a blur (1, 1) + stride-2 1x1 skip (no bias, no activation), summed / sqrt 2; minibatch stddev;
    3x3 ConvLayer; linear + leaky ReLU; linear to one logit."""
    x = lrelu(equal_conv(images, sd["convs.0.0.weight"]), sd["convs.0.1.bias"])
    block = 1
    while f"convs.{block}.conv1.0.weight" in sd:
        p = f"convs.{block}"
        h = lrelu(equal_conv(x, sd[f"{p}.conv1.0.weight"], padding=1), sd[f"{p}.conv1.1.bias"])
        h = lrelu(subsample(equal_conv(blur(h, (2, 2)), sd[f"{p}.conv2.1.weight"])), sd[f"{p}.conv2.2.bias"])
        skip = subsample(equal_conv(blur(x, (1, 1)), sd[f"{p}.skip.1.weight"]))
        x = (h + skip) / SQRT2
        block += 1
    x = minibatch_stddev(x)
    x = lrelu(equal_conv(x, sd["final_conv.0.weight"], padding=1), sd["final_conv.1.bias"])
    hidden = sd["final_linear.0.weight"]
    x = lrelu(F.linear(x.flatten(1), hidden / hidden.shape[1] ** 0.5), sd["final_linear.0.bias"])
    last = sd["final_linear.1.weight"]
    return F.linear(x, last / last.shape[1] ** 0.5, sd["final_linear.1.bias"])


def r1_terms(forward, parameters, images):
    """(logits, dD/dx, d(R1)/d(parameters)) with R1 = mean over images of |dD/dx|^2, as the trainer."""
    images = images.clone().requires_grad_(True)
    logits = forward(images)
    gradient, = torch.autograd.grad(logits.sum(), images, create_graph=True)
    penalty = gradient.square().flatten(1).sum(1).mean()
    weights_gradient = torch.autograd.grad(penalty, parameters, allow_unused=True)
    return logits, gradient, [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, weights_gradient)]


@pytest.mark.needs_backend
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("batch", [4, 8])  # one stddev group, then two
def test_logits_and_r1_gradients_equal_the_official_data_flow(backend, batch):
    torch.manual_seed(batch)
    d = models.Discriminator(SIZE, width=0.125).double()
    for parameter in d.parameters():  # every bias non-zero, so a dropped or misplaced bias shows
        if parameter.dim() == 1:
            parameter.data.normal_(std=0.5)
    images = torch.randn(batch, 3, SIZE, SIZE, dtype=torch.float64)
    names, parameters = zip(*d.named_parameters())
    official_parameters = [p.detach().clone().requires_grad_(True) for p in parameters]
    sd = {**dict(d.named_buffers()), **dict(zip(names, official_parameters))}

    with ops.use_backend(backend):
        ours = r1_terms(d, list(parameters), images)
    official = r1_terms(lambda x: official_discriminator(sd, x), official_parameters, images)

    # float64 end to end: 1e-10 is far above rounding and far below any wiring error.
    torch.testing.assert_close(ours[0], official[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours[1], official[1], rtol=1e-10, atol=1e-10)
    for name, mine, theirs in zip(names, ours[2], official[2]):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-12, msg=name)
    assert ours[1].abs().sum() > 0 and official[2][0].abs().sum() > 0
