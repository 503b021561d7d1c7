"""A Stable Diffusion pipeline whose text encoder, UNet and VAE are ONNX Runtime sessions over an export in
optimum-cli's ``text-to-image`` layout (this arena's dynamo export, `backends.conversion.onnx_pipeline_export`, or
the user's optimum export): what optimum's ``ORTDiffusionPipeline`` was to this backend, without optimum.

Design: the pipeline *is* diffusers' `StableDiffusionPipeline` (a subclass that only adds `from_export`,
``providers`` and a CPU ``device``), and its ``text_encoder``, ``unet`` and ``vae`` are small torch-like stand-ins
around the sessions: torch tensors in, torch tensors out, with the attributes diffusers reads (``config`` with the
model class's defaults filled in, ``dtype``, ``device``). So prompt encoding, classifier-free guidance, latent
scaling and the scheduler loop are diffusers' own code, the very code the PyTorch reference runs: the only thing
that differs between the two backends is what runs the three networks, which is what the arena compares. (A class
of our own re-implementing ``encode_prompt`` and the denoising loop would have to follow diffusers' arithmetic by
hand, release after release; a stand-in only has to follow the few attributes diffusers reads of its modules.)

The stand-ins adapt to the graph: inputs are cast to the graph's types (int64 or int32 ids, float16 for an fp16
export) and outputs come back as float32 CPU tensors; the UNet's timestep is fed as a scalar (optimum's layout and
this arena's) or one per batch row, whichever rank the graph declares.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from diffusers import StableDiffusionPipeline

_NUMPY_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
                "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


def _config(model_class: Any, path: Path) -> Any:
    """A component's config.json as diffusers' FrozenDict (attribute access), the class's defaults filled in."""
    from diffusers.configuration_utils import FrozenDict

    raw = json.loads(path.read_text()) if path.is_file() else {}
    defaults = {} if model_class is None else {
        name: p.default for name, p in inspect.signature(model_class.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in ("self", "config")}
    return FrozenDict({**defaults, **raw})


class OrtComponent:
    """One ONNX Runtime session as a torch-like module: numpy feeds cast to the graph's input types, float32
    torch tensors out (on the CPU, where the pipeline keeps its tensors)."""

    def __init__(self, session: Any, config: Any) -> None:
        import torch

        self.session = session
        self.config = config
        self.dtype = torch.float32  # what the pipeline's tensors are; the graph's own types are cast to and from
        self.device = torch.device("cpu")
        inputs = session.get_inputs()
        self.input_types = {i.name: _NUMPY_TYPES.get(i.type, "float32") for i in inputs}
        self.input_ranks = {i.name: len(i.shape) for i in inputs}
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, **feeds: Any) -> dict[str, Any]:
        import numpy as np
        import torch

        missing = [name for name in self.input_types if name not in feeds]
        if missing:
            raise ValueError(f"the ONNX graph needs the input(s) {', '.join(missing)}, which this pipeline does "
                             "not provide")
        arrays = {name: np.asarray(torch.as_tensor(feeds[name]).detach().cpu().numpy(),  # keeps a 0-d timestep
                                   dtype=self.input_types[name], order="C")
                  for name in self.input_types}
        values = self.session.run(None, arrays)
        out = {}
        for name, value in zip(self.output_names, values, strict=True):
            tensor = torch.from_numpy(np.ascontiguousarray(value))
            out[name] = tensor.float() if tensor.is_floating_point() else tensor
        return out

    def output(self, results: dict[str, Any], *names: str) -> Any:
        """The first of ``names`` the graph returns, else its first output."""
        for name in names:
            if name in results:
                return results[name]
        return results[self.output_names[0]]

    def to(self, *args: Any, **kwargs: Any) -> OrtComponent:  # the sessions stay where they were made
        return self

    def eval(self) -> OrtComponent:
        return self


class OrtTextEncoder(OrtComponent):
    """CLIPTextModel's call: ``input_ids`` -> (last_hidden_state, pooler_output)."""

    def __call__(self, input_ids: Any, attention_mask: Any = None, output_hidden_states: bool | None = None,
                 return_dict: bool = True, **_: Any) -> Any:
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if output_hidden_states:
            raise NotImplementedError("an ONNX text encoder returns its last hidden state only (no clip_skip)")
        feeds = {"input_ids": input_ids}
        if "attention_mask" in self.input_types:
            feeds["attention_mask"] = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        results = self.run(**feeds)
        hidden = self.output(results, "last_hidden_state")
        pooled = results.get("pooler_output", results.get("text_embeds"))
        if not return_dict:
            return (hidden, pooled)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)


class OrtUNet(OrtComponent):
    """UNet2DConditionModel's call: (sample, timestep, encoder_hidden_states) -> noise prediction."""

    def __call__(self, sample: Any, timestep: Any, encoder_hidden_states: Any, timestep_cond: Any = None,
                 cross_attention_kwargs: Any = None, added_cond_kwargs: Any = None, return_dict: bool = True,
                 **_: Any) -> Any:
        import torch
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        if cross_attention_kwargs and cross_attention_kwargs.get("scale", 1.0) != 1.0:
            raise NotImplementedError("an ONNX UNet has no LoRA scale (cross_attention_kwargs)")
        timestep = torch.as_tensor(timestep)
        if self.input_ranks.get("timestep", 0) == 0:  # optimum's layout and this arena's: one scalar
            if timestep.numel() > 1 and not bool((timestep == timestep.reshape(-1)[0]).all()):
                raise ValueError("this ONNX UNet takes one timestep for the whole batch")
            timestep = timestep.reshape(-1)[0]
        else:  # one per batch row
            timestep = timestep.reshape(-1).expand(sample.shape[0]) if timestep.numel() == 1 else timestep
        feeds = {"sample": sample, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states}
        if timestep_cond is not None:
            feeds["timestep_cond"] = timestep_cond
        feeds.update(added_cond_kwargs or {})
        unknown = [name for name in feeds if name not in self.input_types]
        if unknown:
            raise NotImplementedError(f"this ONNX UNet has no input(s) {', '.join(unknown)}")
        noise = self.output(self.run(**feeds), "out_sample")
        return (noise,) if not return_dict else UNet2DConditionOutput(sample=noise)


class OrtVae:
    """AutoencoderKL's ``decode`` (the vae_decoder graph) and ``encode`` (vae_encoder, opened on first use)."""

    def __init__(self, decoder: OrtComponent, encoder_path: Path | None, make_session: Any) -> None:
        self.decoder, self.config = decoder, decoder.config
        self.dtype, self.device = decoder.dtype, decoder.device
        self._encoder_path, self._make_session = encoder_path, make_session
        self._encoder: OrtComponent | None = None

    @property
    def session(self) -> Any:
        return self.decoder.session

    def decode(self, z: Any, return_dict: bool = True, generator: Any = None, **_: Any) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        image = self.decoder.output(self.decoder.run(latent_sample=z), "sample")
        return (image,) if not return_dict else DecoderOutput(sample=image)

    def encode(self, x: Any, return_dict: bool = True, **_: Any) -> Any:
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self._encoder is None:
            if self._encoder_path is None:
                raise NotImplementedError("this ONNX export has no vae_encoder/model.onnx")
            self._encoder = OrtComponent(self._make_session(self._encoder_path), self.config)
        moments = self._encoder.output(self._encoder.run(sample=x), "latent_parameters", "latent_sample")
        distribution = DiagonalGaussianDistribution(moments)
        return (distribution,) if not return_dict else AutoencoderKLOutput(latent_dist=distribution)

    def to(self, *args: Any, **kwargs: Any) -> OrtVae:
        return self

    def eval(self) -> OrtVae:
        return self


class OnnxDiffusionPipeline(StableDiffusionPipeline):
    """diffusers' StableDiffusionPipeline over ONNX Runtime sessions (see the module's docstring)."""

    @classmethod
    def from_export(cls, folder: str | Path, provider: str = "CPUExecutionProvider",
                    provider_options: dict[str, Any] | None = None, session_options: Any = None
                    ) -> OnnxDiffusionPipeline:
        """The pipeline of an export folder (text_encoder/, unet/, vae_decoder/ with model.onnx and config.json;
        tokenizer/, scheduler/, model_index.json), each graph in an InferenceSession on ``provider``."""
        import diffusers
        import onnxruntime
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTokenizer

        root = Path(folder)
        providers = [(provider, provider_options)] if provider_options else [provider]

        def session(path: Path) -> Any:
            return onnxruntime.InferenceSession(str(path), sess_options=session_options, providers=providers)

        text_encoder = OrtTextEncoder(session(root / "text_encoder" / "model.onnx"),
                                      _config(None, root / "text_encoder" / "config.json"))
        unet = OrtUNet(session(root / "unet" / "model.onnx"),
                       _config(UNet2DConditionModel, root / "unet" / "config.json"))
        vae_config = next((p for p in (root / "vae_decoder" / "config.json", root / "vae" / "config.json")
                           if p.is_file()), root / "vae_decoder" / "config.json")
        decoder = OrtComponent(session(root / "vae_decoder" / "model.onnx"), _config(AutoencoderKL, vae_config))
        encoder = root / "vae_encoder" / "model.onnx"
        vae = OrtVae(decoder, encoder if encoder.is_file() else None, session)
        scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")  # the pipeline's tensors; the sessions copy them to their provider

    @property
    def providers(self) -> list[str]:
        """The UNet session's providers, in order (the first is the one that runs it)."""
        return list(self.unet.session.get_providers())
