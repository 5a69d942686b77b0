r"""Autoregressive models: the chain rule made into networks (MADE, PixelCNN).

Any density factorises in any order :math:`\pi` of the coordinates,

.. math::
    p(x) = \prod_{i=1}^{d} p\big(x_{\pi(i)} \mid x_{\pi(1)}, \dots, x_{\pi(i-1)}\big),

and an autoregressive network outputs the parameters of every conditional in one pass, provided
output :math:`i` depends only on the inputs that come before it. Masks enforce that:

- :class:`MaskedLinear` / :class:`MADE` (Germain et al. 2015): each hidden unit gets a degree
  :math:`m \in \{1, \dots, d-1\}`; a weight from a unit of degree :math:`m` to one of degree
  :math:`m'` is kept when :math:`m' \ge m` (hidden layers) or :math:`m' > m` (output layer).
- :class:`MaskedConv2d` / :class:`PixelCNN` (van den Oord et al. 2016): in raster order a pixel
  sees the rows above and the pixels to its left; mask type ``"A"`` (first layer) also hides the
  centre pixel, type ``"B"`` (later layers) keeps it. A plain stack of such convolutions has a
  *blind spot* above and to the right of each pixel (the gated PixelCNN fixes it).

Both models here are for binary data (Bernoulli conditionals): ``log_prob(x)`` sums the
conditionals' log-likelihoods, and ``sample`` draws coordinate by coordinate, one network pass each.

Also here: :func:`chain_rule_log_prob` (the chain rule of a small discrete joint table, in any
order), :func:`made_mask` (the degree rule of one MADE layer), :func:`receptive_field` (which
pixels a PixelCNN output can depend on, read from the masks) and :class:`IndependentBernoulli`
(the baseline whose conditionals ignore the past). The coding exercises ``bits_per_dim`` and
``made_mask`` are registered at the bottom. See the chapter "Autoregressive models: MADE and
PixelCNN" (``book/01b_autoregressive``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedLinear", "MADE", "MaskedConv2d", "PixelCNN", "made_degrees", "made_mask",
           "chain_rule_log_prob", "receptive_field", "IndependentBernoulli"]


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask of shape ``(out, in)``."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        mask = torch.as_tensor(mask, dtype=self.weight.dtype)
        if mask.shape != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), got {tuple(mask.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1")
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _check_binary(x: torch.Tensor, name: str = "x") -> None:
    if x.numel() and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must hold binary values (0 or 1): these models are Bernoulli "
                         "conditionals; binarise the data first")


def _bernoulli(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``1{u < p}`` with ``u`` uniform drawn on the generator's device, then moved to ``p``'s.

    A CPU generator then gives the same draws whatever device the model is on."""
    if generator is None:
        return torch.bernoulli(p)
    u = torch.rand(p.shape, generator=generator, device=generator.device, dtype=p.dtype)
    return (u.to(p.device) < p).to(p.dtype)


def _progress(iterable, progress: bool, total: int, desc: str):
    if not progress:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


def made_mask(m_in: torch.Tensor, m_out: torch.Tensor, *, output: bool = False) -> torch.Tensor:
    r"""The 0/1 mask ``(len(m_out), len(m_in))`` of one MADE layer, from the units' degrees.

    .. math::
        M_{kj} = \mathbb 1[m_{\text{out}, k} \ge m_{\text{in}, j}] \ \text{(hidden layers)},
        \qquad
        M_{ij} = \mathbb 1[m_{\text{out}, i} > m_{\text{in}, j}] \ \text{(output layer)}.

    The strict inequality of the output layer is what keeps output :math:`i` away from input
    :math:`i` (proposition ``prop-ar-made-autoregressive`` of the chapter).
    """
    m_in, m_out = torch.as_tensor(m_in), torch.as_tensor(m_out)
    if m_in.ndim != 1 or m_out.ndim != 1:
        raise ValueError(f"m_in and m_out must be 1-D tensors of degrees, got shapes "
                         f"{tuple(m_in.shape)} and {tuple(m_out.shape)}")
    cmp = m_out[:, None] > m_in[None, :] if output else m_out[:, None] >= m_in[None, :]
    return cmp.to(torch.get_default_dtype())


def made_degrees(d: int, hidden: Sequence[int], order: torch.Tensor) -> list[torch.Tensor]:
    """Degrees of the input, hidden and output units of MADE (deterministic, cyclic assignment).

    ``order[i]`` is the position (1..d) of input ``i`` in the chain rule. Hidden degrees cycle
    through 1..d-1 (for d = 1 they are 0, so that no input reaches a hidden unit).
    """
    degrees = [order.clone()]
    for h in hidden:
        degrees.append(torch.arange(h) % max(d - 1, 1) + 1 if d > 1 else torch.zeros(h, dtype=torch.long))
    return degrees


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015), Bernoulli outputs.

    ``forward(x)`` returns logits ``(B, d)`` with :math:`\text{logit}_i` a function of the inputs
    that precede input :math:`i` in ``order`` only; ``n_params > 1`` returns ``(B, n_params, d)``
    (e.g. a mean and a log-scale per coordinate, as :class:`gencore.flows.MAF` uses).

    Parameters
    ----------
    d : int
        Number of coordinates.
    hidden : sequence of int
        Hidden widths (each at least ``d - 1`` keeps every conditional expressive).
    order : sequence of int, optional
        A permutation of ``0..d-1`` giving the chain-rule order (default: natural order).
    n_params : int
        Outputs per coordinate.
    """

    def __init__(self, d: int, hidden: Sequence[int] = (128,), *, order: Sequence[int] | None = None,
                 n_params: int = 1):
        super().__init__()
        self.d = _positive_int(d, "d")
        self.n_params = _positive_int(n_params, "n_params")
        hidden = tuple(_positive_int(h, "hidden width") for h in hidden)
        perm = torch.arange(d) if order is None else torch.as_tensor(list(order), dtype=torch.long)
        if sorted(perm.tolist()) != list(range(d)):
            raise ValueError(f"order must be a permutation of 0..{d - 1}, got {perm.tolist()}")
        position = torch.empty(d, dtype=torch.long)
        position[perm] = torch.arange(1, d + 1)  # input perm[k] comes k-th
        self.register_buffer("order", perm)
        degrees = made_degrees(d, hidden, position)
        layers: list[nn.Module] = []
        for m_in, m_out in zip(degrees[:-1], degrees[1:]):
            layers += [MaskedLinear(len(m_in), len(m_out), made_mask(m_in, m_out).float()), nn.ReLU()]
        out_mask = made_mask(degrees[-1], position, output=True).float().repeat(n_params, 1)
        layers.append(MaskedLinear(len(degrees[-1]), d * n_params, out_mask))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"x must have shape (batch, {self.d}), got {tuple(x.shape)}")
        out = self.net(x)
        return out if self.n_params == 1 else out.view(-1, self.n_params, self.d)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_i \\log p(x_i \\mid x_{<i})` for binary ``x`` ``(B, d)``, in nats."""
        if self.n_params != 1:
            raise ValueError("log_prob needs n_params = 1 (Bernoulli logits)")
        _check_binary(x)
        return -F.binary_cross_entropy_with_logits(self(x), x, reduction="none").sum(-1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
        """``n`` binary samples, one coordinate at a time in ``order`` (``d`` network passes).

        Follows the model's device; ``generator`` may live on any device (see ``_bernoulli``).
        ``progress`` shows a ``tqdm.auto`` bar over the coordinates."""
        dev = self.order.device
        x = torch.zeros(_positive_int(n, "n"), self.d, device=dev)
        for i in _progress(self.order.tolist(), progress, self.d, "sampling coordinates"):
            p = torch.sigmoid(self(x)[:, i])
            x[:, i] = _bernoulli(p, generator)
        return x


class MaskedConv2d(nn.Conv2d):
    """A 2-D convolution that sees only the pixels before the centre in raster order.

    ``mask_type="A"`` hides the centre pixel too (first layer: output i must not see input i);
    ``"B"`` keeps it (later layers, whose centre already carries only the past).
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int, **kwargs):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kwargs)
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[k // 2 + 1:, :] = 0
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None].expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PixelCNN(nn.Module):
    r"""A small PixelCNN for binary images ``(B, 1, H, W)``: one type-A layer, then type-B layers.

    .. math:: \log p(x) = \sum_{r, c} \log \mathrm{Bern}\big(x_{rc} \mid \sigma(\ell_{rc}(x_{<(r,c)}))\big)

    Parameters
    ----------
    channels : int
        Width of the hidden feature maps.
    n_layers : int
        Number of type-B layers after the first (type-A, 7x7) layer; they use ``kernel_size``.
    kernel_size : int
        Odd kernel size of the type-B layers.
    """

    def __init__(self, channels: int = 32, n_layers: int = 4, kernel_size: int = 3):
        super().__init__()
        _positive_int(channels, "channels")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
        layers: list[nn.Module] = [MaskedConv2d("A", 1, channels, 7), nn.ReLU()]
        for _ in range(n_layers):
            layers += [MaskedConv2d("B", channels, channels, kernel_size), nn.ReLU()]
        layers.append(MaskedConv2d("B", channels, 1, 1))
        self.net = nn.Sequential(*layers)

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be binary images of shape (batch, 1, height, width), got {shape}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)``; logit at (r, c) depends on pixels before (r, c) only."""
        self._check(x)
        return self.net(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of binary images ``(B, 1, H, W)`` in nats, one value per image."""
        self._check(x)
        _check_binary(x)
        return -F.binary_cross_entropy_with_logits(self(x), x, reduction="none").flatten(1).sum(-1)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in bits per pixel."""
        return -self.log_prob(x) / (math.log(2) * x[0].numel())

    @torch.no_grad()
    def sample(self, n: int, height: int, width: int, *, generator: torch.Generator | None = None,
               progress: bool = False) -> torch.Tensor:
        """``n`` images drawn pixel by pixel in raster order (``height * width`` network passes).

        Follows the model's device; ``generator`` may live on any device (a CPU generator gives
        the same images on every device). ``progress`` shows a ``tqdm.auto`` bar over the pixels."""
        dev = next(self.parameters()).device
        x = torch.zeros(_positive_int(n, "n"), 1, _positive_int(height, "height"), _positive_int(width, "width"), device=dev)
        return self.complete(x, 0, generator=generator, progress=progress)

    @torch.no_grad()
    def complete(self, x: torch.Tensor, start: int, *, generator: torch.Generator | None = None,
                 progress: bool = False) -> torch.Tensor:
        """Keep the pixels of ``x`` before raster index ``start`` and draw the rest from the model.

        ``x`` is a batch of binary images ``(B, 1, H, W)`` on the model's device; pixels from
        ``start`` on are drawn from :math:`p(x_i \\mid x_{<i})`, one network pass each. ``start = 0``
        is :meth:`sample`; ``start = W * r`` completes the image below row ``r``.
        """
        self._check(x)
        _check_binary(x)
        height, width = x.shape[-2:]
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= height * width:
            raise ValueError(f"start must be an integer raster index in 0..{height * width}, got {start!r}")
        x = x.clone()
        for k in _progress(range(start, height * width), progress, height * width - start, "sampling pixels"):
            r, c = divmod(k, width)
            p = torch.sigmoid(self(x)[:, 0, r, c])
            x[:, 0, r, c] = _bernoulli(p, generator)
        return x


def receptive_field(net: PixelCNN, height: int, width: int, row: int, col: int) -> torch.Tensor:
    """Pixels that output ``(row, col)`` of ``net`` can depend on, read from the masks alone.

    Returns a bool tensor ``(height, width)``: ``True`` where a chain of unmasked kernel taps
    connects the input pixel to the output. This is the *structural* receptive field; autograd
    on a network with generic weights sees exactly these pixels (the chapter checks it).
    """
    if not isinstance(net, PixelCNN):
        raise ValueError(f"net must be a PixelCNN, got {type(net).__name__}")
    _positive_int(height, "height"), _positive_int(width, "width")
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"(row, col) must lie in the {height}x{width} image, got ({row}, {col})")
    field = torch.zeros(1, 1, height, width, dtype=torch.float64)
    field[0, 0, row, col] = 1.0
    convs = [m for m in net.net if isinstance(m, MaskedConv2d)]
    for conv in reversed(convs):
        taps = (conv.mask[0, 0] > 0).to(torch.float64)
        # output (r, c) reads input (r + dr, c + dc) for every tap (dr, dc): a transposed convolution
        field = (F.conv_transpose2d(field, taps[None, None], padding=taps.shape[-1] // 2) > 0).to(torch.float64)
    return field[0, 0] > 0


def chain_rule_log_prob(log_joint: torch.Tensor, x: torch.Tensor, order: Sequence[int] | None = None) -> torch.Tensor:
    r"""Log-likelihood of ``x`` under a discrete joint table, as a sum of chain-rule conditionals.

    .. math::
        \log p(x) = \sum_{k=1}^{d} \log p\big(x_{\pi(k)} \mid x_{\pi(1)}, \dots, x_{\pi(k-1)}\big),

    each conditional computed by marginalising the table: :math:`p(x_{\pi(\le k)}) /
    p(x_{\pi(< k)})`. Theorem ``thm-ar-chain-rule`` of the chapter says the result is the same
    for every order.

    Parameters
    ----------
    log_joint : Tensor ``(k_1, ..., k_d)``
        Log-probabilities of a normalised joint distribution of ``d`` discrete variables.
    x : LongTensor ``(B, d)``
        Observations, ``0 <= x[:, i] < k_i``.
    order : sequence of int, optional
        A permutation :math:`\pi` of ``0..d-1`` (default: natural order).
    """
    d = log_joint.ndim
    if d < 1:
        raise ValueError("log_joint must have one axis per variable")
    if abs(float(torch.logsumexp(log_joint.reshape(-1), 0))) > 1e-6:
        raise ValueError("log_joint must be normalised: its exponentials must sum to 1")
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != d or x.is_floating_point():
        raise ValueError(f"x must be an integer tensor of shape (batch, {d}), got {tuple(x.shape)} {x.dtype}")
    if bool((x < 0).any()) or any(bool((x[:, i] >= log_joint.shape[i]).any()) for i in range(d)):
        raise ValueError(f"x[:, i] must lie in 0..k_i - 1 with k = {tuple(log_joint.shape)}")
    perm = list(range(d)) if order is None else [int(i) for i in order]
    if sorted(perm) != list(range(d)):
        raise ValueError(f"order must be a permutation of 0..{d - 1}, got {perm}")
    total = torch.zeros(len(x), dtype=log_joint.dtype, device=log_joint.device)
    prev = torch.zeros_like(total)                                 # log p(x_{pi(<1)}) = log 1
    for k in range(1, d + 1):
        keep = perm[:k]
        drop = [i for i in range(d) if i not in keep]
        marg = torch.logsumexp(log_joint, dim=drop) if drop else log_joint     # axes in natural order
        idx = tuple(x[:, i] for i in sorted(keep))
        cur = marg[idx]
        total = total + (cur - prev)                              # log p(x_{pi(k)} | x_{pi(<k)})
        prev = cur
    return total


class IndependentBernoulli(nn.Module):
    r"""The product of independent Bernoulli pixels: every conditional ignores the past.

    :math:`\log p(x) = \sum_i x_i \log p_i + (1 - x_i) \log(1 - p_i)`, fitted by maximum
    likelihood: :math:`\hat p_i` is the frequency of ones at coordinate :math:`i`, clipped to
    ``[clip, 1 - clip]`` so that a pixel never on in training does not cost infinitely many bits
    on a test image. Works for any event shape (flat vectors or images).
    """

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        probs = torch.as_tensor(probs, dtype=torch.get_default_dtype())
        if probs.numel() == 0 or bool(((probs <= 0) | (probs >= 1)).any()):
            raise ValueError("probs must be a non-empty tensor with entries strictly between 0 and 1")
        self.register_buffer("probs", probs.clone())

    @classmethod
    def fit(cls, x: torch.Tensor, *, clip: float = 1e-3) -> "IndependentBernoulli":
        """Maximum-likelihood fit to binary data ``(N, *shape)``: the per-coordinate mean."""
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
            raise ValueError("x must be a tensor of binary data of shape (N, *event_shape) with N >= 1")
        _check_binary(x)
        if not (isinstance(clip, float) and 0 < clip < 0.5):
            raise ValueError(f"clip must be a float in (0, 0.5), got {clip!r}")
        return cls(x.float().mean(0).clamp(clip, 1 - clip)).to(x.device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-likelihood in nats, one value per example of ``x`` ``(B, *event_shape)``."""
        if x.shape[1:] != self.probs.shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.probs.shape))}), got {tuple(x.shape)}")
        _check_binary(x)
        p = self.probs.to(x.dtype)
        return (x * p.log() + (1 - x) * torch.log1p(-p)).flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent draws, shape ``(n, *event_shape)``, on the model's device."""
        p = self.probs.expand(_positive_int(n, "n"), *self.probs.shape)
        return _bernoulli(p.contiguous(), generator)


# --------------------------------------------------------------------------- coding exercises
from gencore.exercises import Exercise, Mistake, register  # noqa: E402  (registry records at the bottom)


def _ref_bits_per_dim(log_prob: torch.Tensor, n_dims: int) -> torch.Tensor:
    from gencore.metrics import bits_per_dim
    return bits_per_dim(-log_prob, n_dims)


def _bits_per_dim_cases() -> list[tuple]:
    cases = []
    for seed, (b, d) in enumerate([(5, 64), (3, 784), (4, 3)]):
        g = torch.Generator().manual_seed(600 + seed)
        cases.append((-d * (0.2 + torch.rand(b, generator=g, dtype=torch.float64)), d))
    return cases


register(Exercise(
    name="bits_per_dim", chapter="01b_autoregressive",
    signature="f(log_prob (B,) in nats per example, n_dims: int) -> Tensor (B,): negative log-likelihood in bits per dimension",
    reference=_ref_bits_per_dim, cases=_bits_per_dim_cases,
    shape_hint="one number per example: divide, do not average over the batch",
    mistakes=(
        Mistake("forgot log 2: nats become bits by dividing by log 2 (one bit is log 2 nats)",
                lambda lp, d: -lp / d),
        Mistake("forgot to divide by the number of dimensions: bits per *dimension* divides by D",
                lambda lp, d: -lp / math.log(2)),
        Mistake("wrong sign: log_prob is a log-likelihood (negative); bits/dim measures the negative log-likelihood",
                lambda lp, d: lp / (d * math.log(2))),
        Mistake("multiplied by log 2 instead of dividing: one bit is log 2 = 0.693 nats, so there are more bits than nats",
                lambda lp, d: -lp * math.log(2) / d),
        Mistake("used log 10: bits are base-2 logarithms, divide by log 2, not log 10",
                lambda lp, d: -lp / (d * math.log(10))),
    )))


def _made_mask_cases() -> list[tuple]:
    """Input layer (degrees = positions 1..d), hidden layer, and output layer (positions) cases."""
    cases = []
    for seed, (d, h, kind) in enumerate([(5, 7, "input"), (5, 6, "hidden"), (5, 7, "output"), (4, 9, "output")]):
        g = torch.Generator().manual_seed(700 + seed)
        positions = torch.randperm(d, generator=g) + 1
        hidden = torch.randint(1, d, (h,), generator=g)
        if kind == "input":
            cases.append((positions, hidden, False))
        elif kind == "hidden":
            cases.append((torch.randint(1, d, (h + 2,), generator=g), hidden, False))
        else:
            cases.append((hidden, positions, True))
    return cases


def _ref_made_mask(m_in, m_out, output):
    return made_mask(m_in, m_out, output=output)


register(Exercise(
    name="made_mask", chapter="01b_autoregressive",
    signature="f(m_in (K,), m_out (J,), output: bool) -> Tensor (J, K) of 0/1: the MADE mask from the degrees",
    reference=_ref_made_mask, cases=_made_mask_cases,
    shape_hint="the mask multiplies a weight of shape (out_features, in_features): rows are the layer's outputs",
    mistakes=(
        Mistake("the output layer needs a strict inequality m_out > m_in: with >=, output i sees input i itself",
                lambda a, b, o: (b[:, None] >= a[None, :]).double()),
        Mistake("hidden layers use m_out >= m_in: the strict inequality cuts connections that are allowed "
                "(a unit of degree m may read units of degree m)",
                lambda a, b, o: (b[:, None] > a[None, :]).double()),
        Mistake("the inequality is reversed: a unit may read only units of smaller or equal degree",
                lambda a, b, o: (b[:, None] < a[None, :]).double() if o else (b[:, None] <= a[None, :]).double()),
    )))

