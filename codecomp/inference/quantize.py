"""Dynamic int8 quantization of a completer's matrix products (`torch.ao.quantization.quantize_dynamic`).

Weights are stored as int8 (one scale per tensor); activations are quantized on the fly, per call, and
every product accumulates in int32 before it goes back to float (fbgemm/x86 kernels on CPU). Embeddings,
activations and the beam search stay in float. Only modules that a model calls as modules can be swapped
for their quantized versions, so each family says which:

- Char-LSTM: `nn.LSTM` (reading prefixes, scoring documents) and the output `nn.Linear`; its one-step decode
  (`CharLSTM.step`) reads the LSTM's weights directly, so `Int8CharLSTM` gives it int8 linears of its own,
  made from the same weights with the same quantization as the LSTM's.
- Tree-LSTM: the input projections of the bottom-up cell (`W_iou`, `W_f`) and every linear of the
  pointer-generator head; the recurrent products of the level-batched encoder read their weights
  directly and stay in float.
- n-gram: no matrix products; `int8` is refused.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic
from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

from codecomp.models.components.char_lstm import CharLSTM, LSTMState, lstm_cell
from codecomp.models.components.hole_model import HoleModel

QUANTIZE_MODES = ("none", "int8")


class Int8CharLSTM(CharLSTM):
    """A `CharLSTM` with int8 matrix products: `forward` and `encode` (inherited) run the dynamically
    quantized LSTM and head; `step` runs int8 linears made from the same weights.

    Args:
        model: the trained float model (not modified).
    """

    def __init__(self, model: CharLSTM) -> None:
        nn.Module.__init__(self)
        with _quietly():
            self._build(model)

    def _build(self, model: CharLSTM) -> None:
        self.config = model.config
        self.embed, self.drop = copy.deepcopy(model.embed), copy.deepcopy(model.drop)
        quantized = quantize_dynamic(copy.deepcopy(nn.ModuleDict({"lstm": model.lstm, "head": model.head})),
                                     {nn.LSTM, nn.Linear}, dtype=torch.qint8)  # fmt: skip
        self.lstm, self.head = quantized["lstm"], quantized["head"]
        # Per layer, the input and the recurrent product of the gates (both biases with the input's), as the
        # quantized LSTM computes them: two int8 products, each with its own activation scale.
        inputs, recurrent = [], []
        for layer in range(self.config.layers):
            w_ih, w_hh = getattr(model.lstm, f"weight_ih_l{layer}"), getattr(model.lstm, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(model.lstm, f"bias_ih_l{layer}"), getattr(model.lstm, f"bias_hh_l{layer}")
            inputs.append(_int8_linear(w_ih, b_ih + b_hh))
            recurrent.append(_int8_linear(w_hh, None))
        self.step_inputs, self.step_recurrent = nn.ModuleList(inputs), nn.ModuleList(recurrent)

    def step(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """`CharLSTM.step` with int8 products: (N,) symbols and (h, c) each (layers, N, hidden) in, (N, V)
        log-probabilities and the new state out."""
        h, c = state
        x = self.embed(tokens)  # (N, E)
        new_h, new_c = [], []
        for layer in range(self.config.layers):
            gates = self.step_inputs[layer](x) + self.step_recurrent[layer](h[layer])  # (N, 4H): i, f, g, o
            x, cell = lstm_cell(gates, c[layer])
            new_h.append(x)
            new_c.append(cell)
        return torch.log_softmax(self.head(x), dim=-1), (torch.stack(new_h), torch.stack(new_c))


def _int8_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A dynamically quantized linear y = x Wᵀ + b, with the quantization `quantize_dynamic` gives nn.LSTM."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.qconfig = default_dynamic_qconfig  # type: ignore[assignment]  # what from_float reads
    return qdynamic.Linear.from_float(linear)


def quantize_hole_model(model: HoleModel) -> HoleModel:
    """A copy of a Tree-LSTM hole model with int8 linears where it calls them as modules (see the module doc)."""
    names = {"encoder.up.W_iou", "encoder.up.W_f"}
    names |= {f"head.{name}" for name, module in model.head.named_modules() if isinstance(module, nn.Linear)}
    with _quietly():
        quantized: HoleModel = quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)
    return quantized


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Without the deprecation warnings torch 2.13 gives while building quantized modules (torch.ao.quantization
    is to move to the torchao package); the modules work as documented meanwhile."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        yield


def quantize_completer(completer: Any, mode: str) -> Any:
    """The completer with its model's matrix products in `mode` ("none": as it is; "int8": see the module doc).

    Raises:
        ValueError: an unknown mode, or a family without an int8 variant (the n-gram), or a model not on the CPU
            (quantized kernels are CPU ones).
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, not {mode!r}")
    if mode == "none":
        return completer
    model = getattr(completer, "model", None)
    if not isinstance(model, CharLSTM | HoleModel):
        raise ValueError(f"the {completer.family} family has no int8 variant (no matrix products to quantize)")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantization runs on the CPU; load the completer with device='cpu'")
    completer.model = (Int8CharLSTM(model) if isinstance(model, CharLSTM) else quantize_hole_model(model)).eval()
    return completer
