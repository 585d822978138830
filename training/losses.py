"""The paper's losses (StyleGAN2's): non-saturating logistic GAN loss and the R1 penalty."""
import torch
import torch.nn.functional as F


def d_logistic_loss(real_pred, fake_pred):
    """D's loss: softplus(-D(x)) on reals + softplus(D(G(z))) on fakes, each averaged."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred):
    """G's non-saturating loss: softplus(-D(G(z))), averaged."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred, real_images):
    """R1: the squared norm of dD(x)/dx on real images, averaged over the batch. ``real_images``
    must require grad; the result can be back-propagated (the gradient keeps its graph)."""
    gradient, = torch.autograd.grad(real_pred.float().sum(), real_images, create_graph=True)
    return gradient.float().pow(2).flatten(1).sum(1).mean()
