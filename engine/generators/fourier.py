"""Fourier: optimise the image's 2-D spectrum, scaled so that low frequencies dominate. No weights besides CLIP's."""

from __future__ import annotations

from engine.generators.base import Declaration, LazyModule, check_size

torch = LazyModule("torch")


class FourierGenerator:
    """Optimise the image's 2-D spectrum, scaled so low frequencies dominate; no weights needed.

    decode = sigmoid(irfft2(spectrum * scale) * gain). The 1/f scale makes Adam's steps act like natural-image
    statistics, which plain pixels lack; encode is the exact inverse, so init images work.
    """

    name = "fourier"
    factor = 2  # the real FFT's inverse needs an even width

    def __init__(self, decay: float = 1.0, gain: float = 0.25, std: float = 0.01) -> None:
        self.decay, self.gain, self.std = decay, gain, std

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size rounded down to even numbers (InvalidSpec below 2x2)."""
        return check_size(width, height, self.factor, self.name)

    def _scale(self, height: int, width: int, device):
        fy = torch.fft.fftfreq(height, device=device)[:, None]
        fx = torch.fft.rfftfreq(width, device=device)[None, :]
        freq = (fx**2 + fy**2).sqrt()
        return 1.0 / freq.clamp(min=1.0 / max(width, height)) ** self.decay  # (H, W//2+1)

    def init_params(self, batch: int, width: int, height: int, gen):
        """Small random spectra with no DC term (a mid-grey start): (B, 3, H, W/2+1, 2)."""
        shape = (batch, 3, height, width // 2 + 1, 2)
        params = torch.randn(shape, generator=gen, device=gen.device) * self.std
        params[..., 0, 0, :] = 0  # start from mid grey: no DC offset
        return params

    def _spatial(self, params):
        b, c, h, wf, _ = params.shape
        width = (wf - 1) * 2
        spectrum = torch.view_as_complex(params.contiguous()) * self._scale(h, width, params.device)
        return torch.fft.irfft2(spectrum, s=(h, width), norm="ortho")

    def decode(self, params):
        """The image, sigmoid(irfft2(params * scale) * gain): (B, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self._spatial(params) * self.gain)

    def encode(self, image):
        """decode's exact inverse: the spectrum of the image's logits over the 1/f scale (pixels kept off 0 and 1)."""
        with torch.no_grad():
            b, c, h, w = image.shape
            logits = torch.logit(image.clamp(1e-3, 1 - 1e-3)) / self.gain
            spectrum = torch.fft.rfft2(logits, norm="ortho") / self._scale(h, w, image.device)
            return torch.view_as_real(spectrum).contiguous()

    def project_(self, params) -> None:
        """Nothing to do: every spectrum is valid."""
        pass

    def upscale(self, params, width: int, height: int):
        """Resample the image's logits (before the sigmoid) to twice the size and take their spectrum."""
        with torch.no_grad():
            logits = torch.nn.functional.interpolate(
                self._spatial(params), size=(height * 2, width * 2), mode="bicubic", align_corners=False
            )
            spectrum = torch.fft.rfft2(logits, norm="ortho") / self._scale(height * 2, width * 2, params.device)
            return torch.view_as_real(spectrum).contiguous()


DECLARATION = Declaration(
    name="fourier",
    summary="Fourier: the image's spectrum, optimised directly; no weights besides CLIP's",
    build=lambda options, weights, engine, width, height: FourierGenerator(),
)
