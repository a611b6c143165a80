"""A finite convolutional network in NumPy whose infinite-width limits are the CNN-GP and
CNTK of :func:`meanfield.kernels` with ``architecture=Conv(k, "circular", readout)``
(docs/theory.md, "Convolutional networks").

NTK parameterization, as neural-tangents' ``stax.Conv(..., parameterization="ntk")``: every
weight and bias is drawn from N(0, 1) and the layer multiplies them by its own constants,
so gradient descent sees the network of the theory::

    z^1_p     = sqrt(sw2 / (C k^2)) sum_d W^1_d x_{p+d} + sqrt(sb2) b^1
    z^{l+1}_p = sqrt(sw2 / (N k^2)) sum_d W^{l+1}_d phi(z^l_{p+d}) + sqrt(sb2) b^{l+1}

with k x k filters, offsets d, stride 1, circular padding (pixel indices modulo H, W), C
input channels and N channels in every hidden layer.  The readout of a network of depth l:

* ``"gap"``: the l-th convolution has one channel per output and the output is its mean
  over pixels, f = (1/HW) sum_p z^l_p: the kernels are (1/(HW)^2) sum_{p,p'} Sigma^l_{pp'}
  and the same for Theta (exactly the GAP readout);
* ``"flatten"``: a dense layer on the flattened activations of the l - 1 convolutions,
  f = sqrt(sw2 / (HW N)) W vec(phi(z^{l-1})) + sqrt(sb2) b (for l = 1 on vec(x), with C in
  place of N).  With circular padding every pixel appears in exactly k^2 filter positions,
  so (1/HW) sum_p Sigma^l_pp = sw2/(HW) sum_p E[phi phi]_pp + sb2 is this layer's kernel,
  and the same holds for Theta: it is the flatten readout of depth l (Arora et al.'s
  CNN-V, whose last layer is fully connected).

Training: full-batch gradient descent on (1/(2 N_Y)) sum (f - y)^2, N_Y the number of
targets, with learning rate eta: after s steps the infinitely wide network would be the NTK
predictor of :func:`meanfield.predict` at time t = eta s (its conventions).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import validate as V
from ..core.activation import get_activation
from ..ntk.conv import Conv
from .trainability import _Fast

__all__ = ["FiniteCNN"]


def _offsets(k):
    r = k // 2
    return [(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)]


def _patches(y, offs):
    """(n, H, W, k^2, C): the input at p + d for every offset d, circular."""
    return np.stack([np.roll(y, shift=(-a, -b), axis=(1, 2)) for a, b in offs], axis=3)


def _matmul(A, B):
    """A (..., a) as rows of a matrix times B (a, b), reshaped back to (..., b): one BLAS
    call (einsum on five-dimensional operands does not always reach BLAS)."""
    lead = A.shape[:3]
    return (np.ascontiguousarray(A).reshape(int(np.prod(lead)), -1) @ B).reshape(lead + (-1,))


def _unpatch(g, offs):
    """The adjoint of :func:`_patches`: sum over d of g[..., d, :] shifted back by d."""
    out = np.zeros(g.shape[:3] + g.shape[4:])
    for i, (a, b) in enumerate(offs):
        out += np.roll(g[:, :, :, i], shift=(a, b), axis=(1, 2))
    return out


class FiniteCNN:
    """A finite CNN at the initialization of the CNN-GP / CNTK (see the module docstring).

    Parameters
    ----------
    activation : str or Activation
    sw2, sb2 : float
        Weight and bias *variances* (not standard deviations).
    depth : int
        l >= 1: l convolutions (``"gap"``) or l - 1 convolutions and a dense readout
        (``"flatten"``), phi between layers, none after the last.
    width : int
        Channels N of the hidden layers.
    image_shape : tuple (H, W, C)
    n_out : int
        Outputs (classes).
    filter_size : int, odd
    readout : {"flatten", "gap"}
    seed : int
        Seeds the N(0, 1) draws of every weight and bias.

    Attributes
    ----------
    params : list of (W, b)
        Convolutions W of shape (k^2, C_in, C_out), b (C_out,); for ``"flatten"`` the last
        entry is the dense readout, W of shape (H W C_in, n_out).
    """

    def __init__(self, activation, sw2, sb2, depth, width, image_shape, n_out, filter_size=3,
                 readout="flatten", seed=0):
        self.act = _Fast(get_activation(activation))
        self.sw2 = V.variance("sw2", sw2)
        self.sb2 = V.variance("sb2", sb2)
        self.depth = V.depth(depth)
        self.width = V.integer("width", width, 1)
        self.n_out = V.integer("n_out", n_out, 1)
        # the architecture whose kernels this network tends to; it checks filter_size, readout
        self.conv = Conv(filter_size, "circular", readout)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C) with sizes >= 1, got {image_shape!r}")
        self.k, self.readout = self.conv.filter_size, readout
        self.shape = tuple(int(s) for s in image_shape)
        self.offs = _offsets(self.k)
        H, W, C = self.shape
        rng = np.random.default_rng(V.integer("seed", seed, 0))
        n_conv = self.depth if readout == "gap" else self.depth - 1
        chans = [C] + [self.width] * n_conv
        if readout == "gap":
            chans[-1] = self.n_out
        self.params = [(rng.standard_normal((self.k ** 2, ci, co)), rng.standard_normal(co))
                       for ci, co in zip(chans[:-1], chans[1:])]
        if readout == "flatten":
            self.params.append((rng.standard_normal((H * W * chans[-1], self.n_out)),
                                rng.standard_normal(self.n_out)))

    def _scale(self, i):
        """sqrt(sw2 / fan_in) of layer i (fan-in C_in k^2, or H W C_in for the dense readout)."""
        W = self.params[i][0]
        fan = W.shape[0] if W.ndim == 2 else W.shape[0] * W.shape[1]
        return math.sqrt(self.sw2 / fan)

    def forward(self, X):
        """Outputs (n, n_out) and what :meth:`backward` needs.

        X : (n, H, W, C) images."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 4 or X.shape[1:] != self.shape:
            raise ValueError(f"X must have shape (n, {', '.join(map(str, self.shape))}), "
                             f"got {X.shape}")
        sb = math.sqrt(self.sb2)
        y, cache = X, []
        n_conv = len(self.params) - (self.readout == "flatten")
        for i in range(n_conv):
            W, b = self.params[i]
            P = _patches(y, self.offs)
            z = self._scale(i) * _matmul(P, W.reshape(-1, W.shape[2])) + sb * b
            cache.append((P, z))
            y = self.act(z) if i < n_conv - 1 or self.readout == "flatten" else z
        if self.readout == "gap":
            return y.mean(axis=(1, 2)), cache
        W, b = self.params[-1]
        v = y.reshape(y.shape[0], -1)
        cache.append((v, None))
        return self._scale(len(self.params) - 1) * v @ W + sb * b, cache

    def backward(self, cache, g):
        """Gradients (dW, db) of every layer, for d loss / d output = g (n, n_out)."""
        grads = [None] * len(self.params)
        sb = math.sqrt(self.sb2)
        n_conv = len(self.params) - (self.readout == "flatten")
        if self.readout == "gap":
            H, W = self.shape[:2]
            dz = np.broadcast_to(g[:, None, None, :] / (H * W), (g.shape[0], H, W, g.shape[1]))
        else:
            Wd, _ = self.params[-1]
            s = self._scale(len(self.params) - 1)
            v = cache[-1][0]
            grads[-1] = (s * v.T @ g, sb * g.sum(axis=0))
            dv = s * g @ Wd.T
            if n_conv == 0:
                return grads
            P, z = cache[n_conv - 1]
            dz = dv.reshape(z.shape) * self.act.derivative(z)
        for i in range(n_conv - 1, -1, -1):
            W, _ = self.params[i]
            P, _ = cache[i]
            s = self._scale(i)
            dz2 = dz.reshape(-1, dz.shape[3])
            grads[i] = (s * (P.reshape(dz2.shape[0], -1).T @ dz2).reshape(W.shape),
                        sb * dz2.sum(axis=0))
            if i == 0:
                break
            dP = s * _matmul(dz, W.reshape(-1, W.shape[2]).T)
            dy = _unpatch(dP.reshape(P.shape), self.offs)
            dz = dy * self.act.derivative(cache[i - 1][1])
        return grads

    def loss_and_grads(self, X, Y):
        """(1/(2 N_Y)) sum (f(X) - Y)^2 and its gradients, N_Y = Y.size."""
        f, cache = self.forward(X)
        r = f - Y
        return 0.5 * np.sum(r * r) / Y.size, self.backward(cache, r / Y.size)

    def train(self, X, Y, learning_rate, steps):
        """Full-batch gradient descent; returns the training loss before each step and after
        the last (length steps + 1).  Non-finite losses stop the training (the rest NaN)."""
        lr = V.scalar("learning_rate", learning_rate, minimum=0.0)
        losses = np.full(V.integer("steps", steps, 0) + 1, np.nan)
        for s in range(losses.size):
            loss, grads = self.loss_and_grads(X, Y)
            losses[s] = loss
            if not math.isfinite(loss) or s == losses.size - 1:
                break
            self.params = [(W - lr * gW, b - lr * gb) for (W, b), (gW, gb) in
                           zip(self.params, grads)]
        return losses

    def empirical_kernels(self, X, output=0):
        """The finite network's NNGP and NTK on X (n x n), to compare with the CNN-GP / CNTK.

        NNGP: the covariance of output ``output`` over the last layer's weights and bias
        given the hidden layers (for GAP, (1/(HW)^2) sum_{p,p'} of the last convolution's
        covariance); NTK: sum over all parameters of df(x)/dtheta df(x')/dtheta, from one
        backward pass per image.  Both tend to the infinite-width kernels as width grows.
        """
        f, cache = self.forward(X)
        n = f.shape[0]
        H, W = self.shape[:2]
        if self.readout == "flatten":
            v = cache[-1][0]
            nngp = self.sw2 * v @ v.T / v.shape[1] + self.sb2
        else:
            P = cache[-1][0]  # (n, H, W, k^2, C_in): the last convolution's input patches
            m = P.mean(axis=(1, 2)).reshape(n, -1)
            # the same for every output: the last layer's weights are independent per channel
            nngp = self.sw2 * m @ m.T / m.shape[1] + self.sb2
        J = []
        for i in range(n):
            g = np.zeros_like(f)
            g[i, output] = 1.0
            grads = self.backward(cache, g)
            J.append(np.concatenate([np.concatenate([gW.ravel(), gb.ravel()]) for gW, gb in grads]))
        J = np.array(J)
        return nngp, J @ J.T
