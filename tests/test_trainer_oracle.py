"""One training step (D, lazy R1, G, EMA) against the recipe's formulas written out here (StyleGAN2,
StyleGAN2-ADA), not against the trainer's own output:

- D: softplus(-D(x)) + softplus(D(G(z))), each averaged over the batch;
- lazy R1 every k steps: gamma / 2 * mean_images(|dD(x)/dx|^2) * k, on the D just updated;
- G: softplus(-D(G(z))) averaged, on the D after its R1 step;
- Adam with StyleGAN2's lazy-regularization settings (lr * c, betas ** c, c = k / (k + 1) for D),
  its update written out (no torch.optim);
- EMA: ema <- beta * ema + (1 - beta) * G with beta = 0.5 ** (batch / half-life in images),
  StyleGAN2-ADA's ``ema_beta = 0.5 ** (batch_size / ema_nimg)``.

Everything in float64; the trainer's losses are float32 (it casts the logits), which bounds the
agreement at float32's ~1e-7 relative."""
import copy
import random

import pytest
import torch
from torch.func import functional_call

from training.config import TrainConfig
from training.train import Trainer

# beta1 0.5 rather than the recipe's 0, so that Adam's first moment and the lazy beta1 ** c count.
GAMMA, REG_EVERY, BATCH, HALF_LIFE, LR, BETA1, BETA2 = 3.0, 4, 4, 10.0, 0.002, 0.5, 0.99
CONFIG = dict(dataset="procedural", procedural_images=8, size=16, width=0.03, style_dim=32, n_mlp=2, batch=BATCH,
              num_workers=0, mixing=0.0, r1_gamma=GAMMA, d_reg_every=REG_EVERY, ema_half_life=HALF_LIFE, lr=LR,
              beta1=BETA1, beta2=BETA2, backend="reference", log_every=1, sample_every=1000, checkpoint_every=1000)
# float32 logits and losses inside the trainer (see above); everything else float64.
TOLERANCE = dict(rtol=1e-5, atol=1e-9)


def softplus(x):
    return torch.log1p(torch.exp(x))


def adam(parameters, gradients, state, lr, betas, eps=1e-8):
    """One Adam step (Kingma and Ba, with bias correction) on {name: tensor}; ``state`` holds
    {name: (step, m, v)} and is updated. A parameter without a gradient is left alone."""
    updated = {}
    for name, parameter in parameters.items():
        gradient = gradients.get(name)
        if gradient is None:
            updated[name] = parameter
            continue
        step, m, v = state.get(name, (0, torch.zeros_like(parameter), torch.zeros_like(parameter)))
        step, m, v = step + 1, betas[0] * m + (1 - betas[0]) * gradient, betas[1] * v + (1 - betas[1]) * gradient ** 2
        state[name] = step, m, v
        m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
        updated[name] = parameter - lr * m_hat / (v_hat.sqrt() + eps)
    return updated


def gradients(loss, parameters):
    """{name: dloss/dparameter}, None for the parameters the loss does not reach."""
    names = list(parameters)
    grads = torch.autograd.grad(loss, [parameters[n] for n in names], allow_unused=True)
    return {name: grad for name, grad in zip(names, grads)}


def leaves(module):
    return {name: p.detach().clone().requires_grad_(True) for name, p in module.named_parameters()}


def oracle_step(g, d, g_ema, real, z_d, noise_d, z_g, noise_g):
    """The weights and gradients after one step (step 0, so with R1) from the recipe's formulas."""
    def generate(params, z, noise):
        return functional_call(g, params, (z,), {"noise": noise})

    def discriminate(params, images):
        return functional_call(d, params, (images,))

    g0, d0 = leaves(g), leaves(d)
    d_state, g_state = {}, {}
    c = REG_EVERY / (REG_EVERY + 1)  # D takes k + 1 optimizer steps per k
    d_hyper = dict(lr=LR * c, betas=(BETA1 ** c, BETA2 ** c))

    fake = generate(g0, z_d, noise_d).detach()
    real_scores, fake_scores = discriminate(d0, real), discriminate(d0, fake)
    d_loss = softplus(-real_scores).mean() + softplus(fake_scores).mean()
    d1 = {n: p.detach().requires_grad_(True) for n, p in adam(d0, gradients(d_loss, d0), d_state, **d_hyper).items()}

    images = real.clone().requires_grad_(True)
    image_gradient, = torch.autograd.grad(discriminate(d1, images).sum(), images, create_graph=True)
    penalty = image_gradient.square().sum((1, 2, 3)).mean()
    r1_gradients = gradients(GAMMA / 2 * penalty * REG_EVERY, d1)
    # The last bias gets no R1 gradient; the trainer gives it an exact 0 (DDP needs one).
    r1_gradients = {n: torch.zeros_like(d1[n]) if grad is None else grad for n, grad in r1_gradients.items()}
    d2 = {n: p.detach() for n, p in adam(d1, r1_gradients, d_state, **d_hyper).items()}

    g_loss = softplus(-discriminate(d2, generate(g0, z_g, noise_g))).mean()
    g_gradients = gradients(g_loss, g0)
    g1 = {n: p.detach() for n, p in adam(g0, g_gradients, g_state, lr=LR, betas=(BETA1, BETA2)).items()}

    beta = 0.5 ** (BATCH / HALF_LIFE)
    ema1 = {n: beta * p.detach() + (1 - beta) * g1[n] for n, p in g_ema.named_parameters()}
    return dict(d=d2, g=g1, g_ema=ema1, d_grad=r1_gradients, g_grad=g_gradients,
                losses=dict(d=d_loss, r1=penalty, g=g_loss, real_score=real_scores.mean(),
                            fake_score=fake_scores.mean()))


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def recording_generator(trainer, calls):
    """The trainer's generator with noise drawn here and every (z, noise) recorded, so that the
    oracle can replay them."""
    def generate(z):
        noise = trainer.g_module.make_noise(z.shape[0])
        calls.append((z.detach().clone(), noise))
        return trainer.g_module(z, noise=noise)
    return generate


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.slow
def test_one_step_follows_the_recipes_formulas(tmp_path, float64_default, channels_last):
    trainer = Trainer(TrainConfig(out=str(tmp_path), channels_last=channels_last, **CONFIG))
    for module in (trainer.g_module, trainer.d_module):  # non-zero biases and noise strengths
        for parameter in module.parameters():
            if parameter.dim() == 1:
                parameter.data.normal_(std=0.2)
    trainer.g_ema.load_state_dict(trainer.g_module.state_dict())
    torch.manual_seed(1)
    real = torch.rand(BATCH, 3, 16, 16) * 2 - 1
    trainer.data = iter([real])
    calls = []
    trainer.g_train = recording_generator(trainer, calls)
    g, d, g_ema = copy.deepcopy(trainer.g_module), copy.deepcopy(trainer.d_module), copy.deepcopy(trainer.g_ema)

    losses = trainer.train_step()
    (z_d, noise_d), (z_g, noise_g) = calls
    expected = oracle_step(g, d, g_ema, real, z_d, noise_d, z_g, noise_g)

    assert set(losses) == set(expected["losses"])
    for name, value in expected["losses"].items():
        torch.testing.assert_close(losses[name].double(), value.detach(), **TOLERANCE, msg=name)
    for part, module in (("d", trainer.d_module), ("g", trainer.g_module), ("g_ema", trainer.g_ema)):
        for name, parameter in module.named_parameters():
            torch.testing.assert_close(parameter.detach(), expected[part][name], **TOLERANCE, msg=f"{part}.{name}")
    # The gradients the last updates took: D's from the R1 step, G's from its step.
    for part, module in (("d_grad", trainer.d_module), ("g_grad", trainer.g_module)):
        for name, parameter in module.named_parameters():
            want = expected[part][name]
            if want is None:
                assert parameter.grad is None, f"{part}.{name}"
            else:
                torch.testing.assert_close(parameter.grad, want, **TOLERANCE, msg=f"{part}.{name}")

    # Lazy R1: the next one on step k.
    trainer.data = iter([real] * REG_EVERY)
    assert ["r1" in trainer.train_step() for _ in range(REG_EVERY)] == [False] * (REG_EVERY - 1) + [True]


@pytest.mark.parametrize("mixing", [0.0, 0.3, 1.0])
def test_style_mixing_takes_two_codes_with_the_set_probability(tmp_path, mixing):
    trainer = Trainer(TrainConfig(out=str(tmp_path), **{**CONFIG, "mixing": mixing}))
    random.seed(0)
    draws = [trainer._latent_codes() for _ in range(1000)]
    mixed = [isinstance(codes, list) for codes in draws]
    # 1000 draws: the binomial's standard deviation is at most 0.016.
    assert abs(sum(mixed) / len(mixed) - mixing) < 0.05
    assert all(len(codes) == 2 for codes in draws if isinstance(codes, list))
