"""The two networks of the method: AffineNet (global stage) and DeformableNet (local stage).

Each network stores the keyword arguments it was built with in ``self.config`` so that a
checkpoint can rebuild it (see :mod:`bidsreg.nn.checkpoint`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AffineTransformer, VecInt, compose_affine

__all__ = ["AffineNet", "DeformableNet"]


def _conv(in_channels: int, out_channels: int, stride: int = 1, norm: bool = False) -> nn.Sequential:
    layers = [nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1)]
    if norm:
        layers.append(nn.InstanceNorm3d(out_channels, affine=True))
    return nn.Sequential(*layers, nn.LeakyReLU(0.2))


class AffineNet(nn.Module):
    """Regress the 12 parameters of an affine map from a (fixed, moving) pair.

    The inputs are average-pooled by ``pool``, read by a strided convolutional encoder,
    pooled to a fixed 4³ size (so grids of any size fit, as long as each pooled side is at
    least ``2 ** (len(features) + 1)`` voxels, which leaves instance normalisation more than
    one voxel at the coarsest level) and mapped to ``[A | t]`` by a fully connected head
    whose last layer starts at zero, so that the initial output is the identity ``[I | 0]``.
    The network is applied ``passes`` times in a recursive cascade: each pass reads the
    moving image warped by the previous passes and refines their affine.

    Parameters
    ----------
    features : sequence of int
        Channels of the encoder levels; each level halves the grid.
    hidden : int
        Width of the hidden fully connected layer.
    norm : bool
        Instance normalisation after each convolution (steadier training from a batch of one).
    pool : int
        Average-pooling factor of the inputs (the affine needs no fine detail).
    passes : int
        Passes of the recursive cascade.
    """

    def __init__(
        self,
        features: Sequence[int] = (16, 32, 64, 64),
        hidden: int = 256,
        norm: bool = True,
        pool: int = 2,
        passes: int = 2,
    ) -> None:
        super().__init__()
        if pool < 1 or passes < 1:
            raise ValueError(f"pool and passes must be >= 1, got {pool} and {passes}")
        self.config = {"features": list(features), "hidden": int(hidden), "norm": bool(norm), "pool": int(pool), "passes": int(passes)}
        layers, channels = [], 2
        for width in features:
            layers += [_conv(channels, width, stride=2, norm=norm), _conv(width, width, norm=norm)]
            channels = width
        self.encoder = nn.Sequential(*layers)
        self.cells = nn.AdaptiveAvgPool3d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 64, hidden), nn.LeakyReLU(0.2))
        self.out = nn.Linear(hidden, 12)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("identity", torch.eye(3, 4), persistent=False)
        self.warp = AffineTransformer()

    @property
    def min_side(self) -> int:
        """The smallest grid side (voxels, before pooling) the encoder can read."""
        return 2 ** (len(self.config["features"]) + 1) * self.config["pool"]

    def downsample(self, image: torch.Tensor) -> torch.Tensor:
        """Average-pool an (N, C, X, Y, Z) image to the resolution the network reads."""
        factor = self.config["pool"]
        return F.avg_pool3d(image, factor) if factor > 1 else image

    def step(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """One pass on already downsampled inputs: theta (N, 3, 4)."""
        if min(fixed.shape[2:]) * self.config["pool"] < self.min_side:
            raise ValueError(
                f"AffineNet needs grid sides of at least {self.min_side} voxels, "
                f"got {tuple(s * self.config['pool'] for s in fixed.shape[2:])}"
            )
        x = self.cells(self.encoder(torch.cat([fixed, moving], dim=1)))
        return self.identity + self.out(self.head(x)).view(-1, 3, 4)

    def cascade(self, fixed: torch.Tensor, moving: torch.Tensor) -> list[torch.Tensor]:
        """Theta after each pass, for downsampled (N, 1, X, Y, Z) inputs."""
        thetas = [self.step(fixed, moving)]
        for _ in range(self.config["passes"] - 1):
            refinement = self.step(fixed, self.warp(moving, thetas[-1]))
            thetas.append(compose_affine(thetas[-1], refinement))
        return thetas

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """Return theta (N, 3, 4) for (N, 1, X, Y, Z) inputs on the network grid."""
        return self.cascade(self.downsample(fixed), self.downsample(moving))[-1]


class DeformableNet(nn.Module):
    """U-Net with skip connections predicting a dense displacement (or velocity) field.

    Parameters
    ----------
    encoder : sequence of int
        Channels of the encoder levels; each level halves the grid (sides must be multiples
        of ``2**len(encoder)``).
    decoder : sequence of int
        Channels of the decoder levels (same length as ``encoder``), coarse to fine.
    head : sequence of int
        Extra full-resolution convolutions before the 3-channel output.
    diffeomorphic : bool
        Treat the output as a stationary velocity field and integrate it by scaling and
        squaring, so that the transform is invertible.
    integration_steps : int
        Squarings for the diffeomorphic integration.
    """

    def __init__(
        self,
        encoder: Sequence[int] = (16, 32, 32, 32),
        decoder: Sequence[int] = (32, 32, 32, 32),
        head: Sequence[int] = (16, 16),
        diffeomorphic: bool = False,
        integration_steps: int = 7,
    ) -> None:
        super().__init__()
        if len(decoder) != len(encoder):
            raise ValueError(f"encoder and decoder need the same depth, got {encoder} and {decoder}")
        self.config = {
            "encoder": list(encoder),
            "decoder": list(decoder),
            "head": list(head),
            "diffeomorphic": bool(diffeomorphic),
            "integration_steps": int(integration_steps),
        }
        self.down = nn.ModuleList()
        channels, skips = 2, [2]
        for width in encoder:
            self.down.append(_conv(channels, width, stride=2))
            channels = width
            skips.append(width)
        skips.pop()
        self.up = nn.ModuleList()
        for width, skip in zip(decoder, reversed(skips)):
            self.up.append(_conv(channels + skip, width))
            channels = width
        self.head = nn.Sequential(*[_conv(c_in, c_out) for c_in, c_out in zip([channels, *head], head)])
        channels = head[-1] if head else channels
        self.flow = nn.Conv3d(channels, 3, 3, padding=1)
        nn.init.normal_(self.flow.weight, std=1e-5)
        nn.init.zeros_(self.flow.bias)
        self.integrate = VecInt(integration_steps) if diffeomorphic else None
        # Channels-last weights make oneDNN run every convolution channels-last: on a CPU
        # inference takes 80 % and a training step 67 % of the time (the same values to 1e-5).
        self.to(memory_format=torch.channels_last_3d)

    @property
    def depth(self) -> int:
        return len(self.down)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """Return the displacement (N, 3, X, Y, Z) in voxels of the input grid.

        For a diffeomorphic network this is the integrated field; the raw velocity is
        :meth:`velocity`.
        """
        field = self.velocity(fixed, moving)
        return self.integrate(field) if self.integrate is not None else field

    def velocity(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """The network's raw 3-channel output (velocity or displacement, voxels)."""
        multiple = 2**self.depth
        if any(s % multiple for s in fixed.shape[2:]):
            raise ValueError(f"grid sides must be multiples of {multiple}, got {tuple(fixed.shape[2:])}")
        x = torch.cat([fixed, moving], dim=1)
        history = [x]
        for layer in self.down:
            x = layer(x)
            history.append(x)
        history.pop()
        for layer in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = layer(torch.cat([x, history.pop()], dim=1))
        return self.flow(self.head(x)).contiguous()  # channels-first: grid_sample reads it 2-3x faster
