"""Per-step loss records of the GAN loop, kept on the device and read in batches.

Reading a loss as a Python float waits for the device to finish the step (a host
synchronisation). The loop therefore stacks each step's scalars on the device and reads every
pending step in one transfer, every `read_every` steps and at the end of each epoch. The
records read are the same floats, built the same way, as a read after every step: float32
values, D's terms averaged over its n_critic steps in Python (float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepRecord:
    record: dict[str, float]  # as logged: step, epoch, loss_d, loss_g, D's and G's terms, d_real, d_fake[, rt, ada_p]
    adversarial_d: float  # D's adversarial loss, mean over its n_critic steps (the collapse guard reads it)
    rt: list[float]  # E[sign(D(x_real))] of each D step (ADA observes them); [] without ADA


@dataclass
class _Pending:
    meta: dict[str, float]  # step, epoch[, ada_p]: known on the host
    d_keys: tuple[str, ...]
    d_values: torch.Tensor  # (n_critic, len(d_keys)) float32, on the device
    g_keys: tuple[str, ...]
    g_values: torch.Tensor  # (len(g_keys),) float32, on the device


class StepRecords:
    """Device-side scalars of the steps not read yet; `read()` returns their records, oldest first."""

    def __init__(self) -> None:
        self.pending: list[_Pending] = []

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, meta: dict[str, float], d_steps: list[dict[str, torch.Tensor]], g_scalars: dict[str, torch.Tensor]) -> None:
        """One G step: `d_steps` holds the 0-d scalars of each of its D steps (the same keys in
        each, "adversarial_d" among them), `g_scalars` G's ("loss_g" first)."""
        d_keys = tuple(d_steps[0])
        d_values = torch.stack([torch.stack([s[k].detach().float() for k in d_keys]) for s in d_steps])
        g_values = torch.stack([v.detach().float() for v in g_scalars.values()])
        self.pending.append(_Pending(dict(meta), d_keys, d_values, tuple(g_scalars), g_values))

    def read(self) -> list[StepRecord]:
        """Every pending step as a record, with one device-to-host transfer; clears the queue."""
        if not self.pending:
            return []
        flat = torch.cat([torch.cat([p.d_values.flatten(), p.g_values]) for p in self.pending]).tolist()
        out, at = [], 0
        for p in self.pending:
            n_critic, n_d = p.d_values.shape
            d_rows = [dict(zip(p.d_keys, flat[at + j * n_d : at + (j + 1) * n_d], strict=True)) for j in range(n_critic)]
            at += n_critic * n_d
            g_values = dict(zip(p.g_keys, flat[at : at + len(p.g_keys)], strict=True))
            at += len(p.g_keys)
            d_sums: dict[str, float] = {}
            for row in d_rows:
                for k, v in row.items():
                    d_sums[k] = d_sums.get(k, 0.0) + v
            d_means = {k: v / n_critic for k, v in d_sums.items()}
            adversarial_d = d_means.pop("adversarial_d")
            meta = dict(p.meta)
            ada_p = meta.pop("ada_p", None)
            record = {**meta, "loss_d": d_means.pop("loss_d"), "loss_g": g_values.pop("loss_g"), **d_means, **g_values}
            if ada_p is not None:
                record["ada_p"] = ada_p
            out.append(StepRecord(record, adversarial_d, [row["rt"] for row in d_rows if "rt" in row]))
        self.pending = []
        return out


def to_floats(scalars: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-d tensors -> Python floats, with one device transfer for all of them (the translator's
    loop reads its records every step this way)."""
    values = torch.stack([v.detach().float() for v in scalars.values()]).tolist()
    return dict(zip(scalars, values, strict=True))
