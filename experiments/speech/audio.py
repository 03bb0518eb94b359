"""Audio for the speech experiment: WAV reading, resampling, log-mel features, augmentation.

Log-mel filterbanks are computed here in NumPy (about 40 lines) rather than with ``librosa``:
librosa pulls in numba and its start-up compiles for seconds, while the whole feature
pipeline is one framing, one ``rfft`` and one matrix product. The tests check it against a
direct reference (a hand-built DFT matrix and triangular filters computed point by point)
and against known properties (a pure tone lands in the mel channel around its frequency).

Features of a signal ``x`` at ``rate`` Hz: frames of ``win`` samples every ``hop`` samples
(25 ms / 10 ms at 16 kHz), a periodic Hann window, the power spectrum
``|X_k|^2`` of an ``n_fft``-point DFT, ``n_mels`` triangular filters equally spaced on the
HTK mel scale ``m(f) = 2595 log10(1 + f / 700)`` between ``fmin`` and ``fmax``, then
``log(max(E, 1e-10))``.
"""

from __future__ import annotations

import math
import wave
from math import gcd
from pathlib import Path

import numpy as np

__all__ = [
    "augment",
    "hz_to_mel",
    "log_mel",
    "mel_filterbank",
    "mel_to_hz",
    "read_wav",
    "resample",
    "stack_frames",
    "to_int16",
]

_FLOOR = 1e-10


def hz_to_mel(f):
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, rate: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:  # fmt: skip
    """``(n_mels, n_fft // 2 + 1)`` triangular filters, peaks equally spaced in mel.

    Filter ``j`` rises linearly from edge ``j`` to its centre (edge ``j + 1``) and falls to
    edge ``j + 2``, where the ``n_mels + 2`` edges are equally spaced on the mel scale.
    """
    fmax = rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= rate / 2:
        raise ValueError(
            f"`fmin`, `fmax` must satisfy 0 <= fmin < fmax <= rate/2, got {fmin}, {fmax}"
        )
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (centre - lo)
    falling = (hi - freqs[None, :]) / (hi - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def _frames(x: np.ndarray, win: int, hop: int) -> np.ndarray:
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    return np.lib.stride_tricks.sliding_window_view(x, win)[::hop]  # a view, no copy


def log_mel(x: np.ndarray, rate: int = 16_000, *, n_mels: int = 40, n_fft: int = 512,
            win: int = 400, hop: int = 160, fmin: float = 20.0,
            fmax: float | None = None) -> np.ndarray:  # fmt: skip
    """``(T, n_mels)`` log-mel energies of the mono signal ``x`` (float, any scale).

    ``T = 1 + (len(x) - win) // hop`` (one frame for a signal shorter than ``win``).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"`x` must be a mono signal of shape (N,), got shape {x.shape}")
    if win > n_fft:
        raise ValueError(f"`win` must be <= n_fft = {n_fft}, got {win}")
    window = np.hanning(win + 1)[:-1]  # periodic Hann
    spectrum = np.fft.rfft(_frames(x, win, hop) * window, n=n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    energies = power @ mel_filterbank(n_mels, n_fft, rate, fmin, fmax).T
    return np.log(np.maximum(energies, _FLOOR)).astype(np.float32)


def stack_frames(features: np.ndarray, k: int) -> np.ndarray:
    """``(ceil(T / k), k * D)``: every ``k`` consecutive frames side by side (zero-padded end).

    Example:
        >>> stack_frames(np.arange(6.0).reshape(3, 2), 2)
        array([[0., 1., 2., 3.],
               [4., 5., 0., 0.]])
    """
    T, D = features.shape
    n = -(-T // k)
    padded = np.zeros((n * k, D), features.dtype)
    padded[:T] = features
    return padded.reshape(n, k * D)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` (float, 1-D) from ``rate`` to ``target`` Hz (polyphase, ``scipy.signal``)."""
    if rate <= 0 or target <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} -> {target}")
    if rate == target:
        return np.asarray(x, np.float32)
    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(np.asarray(x, np.float64), target // g, rate // g).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (clipped)."""
    return np.clip(np.round(np.asarray(x) * 32767.0), -32768, 32767).astype(np.int16)


_WIDTHS = {1: np.uint8, 2: "<i2", 4: "<i4"}


def read_wav(path: str | Path, target_rate: int = 16_000) -> np.ndarray:
    """A PCM WAV file as float32 mono samples at ``target_rate`` Hz.

    Any sample rate (resampled), 8-, 16-, 24- or 32-bit integer PCM, any number of channels
    (averaged to mono).

    Raises:
        ValueError: the file cannot be read as PCM WAV (the message names the file).
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError, OSError) as err:
        reason = str(err) or f"{type(err).__name__}: the file ends before its header does"
        raise ValueError(f"`{path}` is not a readable PCM WAV file ({reason})") from None
    if width == 3:  # 24-bit: widen to 32-bit
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        data = (b[:, 0].astype(np.int32) << 8 | b[:, 1].astype(np.int32) << 16
                | b[:, 2].astype(np.int32) << 24) >> 8  # fmt: skip
        scale = float(1 << 23)
    elif width in _WIDTHS:
        data = np.frombuffer(raw, _WIDTHS[width]).astype(np.float64)
        if width == 1:
            data, scale = data - 128.0, 128.0
        else:
            scale = float(1 << (8 * width - 1))
    else:
        raise ValueError(f"`{path}` has {8 * width}-bit samples; 8, 16, 24 or 32-bit PCM expected")
    if channels < 1 or len(data) % channels:
        raise ValueError(f"`{path}` is truncated or has {channels} channels")
    mono = (np.asarray(data, np.float64) / scale).reshape(-1, channels).mean(axis=1)
    if len(mono) == 0:
        raise ValueError(f"`{path}` holds no samples")
    return resample(mono, rate, target_rate)


def augment(x: np.ndarray, rate: int, rng: np.random.Generator, *, noise_prob: float,
            snr_db: tuple[float, float], reverb_prob: float, rt60: tuple[float, float],
            gain_db: tuple[float, float]) -> np.ndarray:  # fmt: skip
    """``x`` with a random gain, then (each with its probability) reverberation and noise.

    Reverberation convolves with a synthetic room impulse response: a direct path plus
    exponentially decaying Gaussian noise reaching -60 dB after ``RT60`` seconds (drawn from
    ``rt60``); the output keeps ``len(x)`` samples. Noise is white or brown (integrated
    white, a low-frequency rumble), scaled to an SNR drawn from ``snr_db`` against the
    clip's mean power.
    """
    x = np.asarray(x, np.float64) * 10.0 ** (rng.uniform(*gain_db) / 20.0)
    if rng.random() < reverb_prob:
        t60 = rng.uniform(*rt60)
        n = max(2, int(t60 * rate))
        decay = np.exp(-math.log(1000.0) * np.arange(n) / n)  # -60 dB at RT60
        h = rng.standard_normal(n) * decay * 0.3
        h[0] = 1.0
        from scipy.signal import fftconvolve

        x = fftconvolve(x, h / np.sqrt(np.sum(h**2)))[: len(x)]
    if rng.random() < noise_prob:
        noise = rng.standard_normal(len(x))
        if rng.random() < 0.5:
            noise = np.cumsum(noise)
            noise -= np.linspace(noise[0], noise[-1], len(noise))  # no drift
        p_signal = np.mean(x**2) + 1e-12
        p_noise = np.mean(noise**2) + 1e-12
        snr = rng.uniform(*snr_db)
        x = x + noise * np.sqrt(p_signal / p_noise / 10.0 ** (snr / 10.0))
    return x.astype(np.float32)
