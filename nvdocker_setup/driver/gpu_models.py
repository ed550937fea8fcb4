"""A GPU's brand and architecture (CUDA compute capability) from its model name, for the ``brand``
and ``arch`` keys of ``NVIDIA_REQUIRE_*`` (CUDA images: ``brand=tesla,driver>=470,driver<471``).

libnvidia-container asks NVML (``nvmlDeviceGetBrand``, ``nvmlDeviceGetCudaComputeCapability``); the
runtime loads no NVML (tens of ms on every start), so both come from the model name the kernel module
lists in ``/proc/driver/nvidia/gpus/<bus>/information`` and these tables, NVML's brand names
lower-cased as libnvidia-container compares them. A model these tables do not know has brand
``unknown`` (NVML's NVML_BRAND_UNKNOWN) and no architecture: a condition on it does not hold.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Optional, Tuple

#: (word in the model name, NVML brand), first match wins: the product lines that name themselves.
NAMED_BRANDS: Tuple[Tuple[str, str], ...] = (
    ("quadro rtx", "quadrortx"),
    ("quadro", "quadro"),
    ("geforce rtx", "geforcertx"),
    ("geforce", "geforce"),
    ("titan rtx", "titanrtx"),
    ("titan", "titan"),
    ("nvs", "nvs"),
    ("grid", "grid"),
    ("rtx a", "nvidiartx"),  # RTX A6000, RTX A4000 ...
    ("rtx ", "nvidiartx"),  # RTX 6000 Ada, RTX 4000 SFF Ada ...
    ("tesla", "tesla"),
)

#: (model token, compute capability), for the data-center GPUs NVML brands Tesla and the others by
#: their number; the token is matched as a word of the model name (``A100`` in ``NVIDIA A100-SXM4-40GB``).
ARCHITECTURES: Tuple[Tuple[str, str], ...] = (
    ("B200", "10.0"), ("B100", "10.0"), ("GB200", "10.0"),
    ("H200", "9.0"), ("H100", "9.0"), ("H800", "9.0"), ("GH200", "9.0"), ("H20", "9.0"),
    ("L40S", "8.9"), ("L40", "8.9"), ("L20", "8.9"), ("L4", "8.9"), ("L2", "8.9"),
    ("A100", "8.0"), ("A800", "8.0"), ("A30", "8.0"),
    ("A40", "8.6"), ("A16", "8.6"), ("A10G", "8.6"), ("A10", "8.6"), ("A2", "8.6"),
    ("T4", "7.5"), ("T4G", "7.5"), ("V100", "7.0"), ("V100S", "7.0"),
    ("P100", "6.0"), ("P40", "6.1"), ("P4", "6.1"), ("P6", "6.1"),
    ("K80", "3.7"), ("K40", "3.5"), ("K20", "3.5"), ("M60", "5.2"), ("M40", "5.2"), ("M10", "5.0"),
    ("RTX 6000 Ada", "8.9"), ("RTX 5000 Ada", "8.9"), ("RTX 4000 Ada", "8.9"),
    ("RTX A6000", "8.6"), ("RTX A5000", "8.6"), ("RTX A4000", "8.6"), ("RTX A2000", "8.6"),
    ("RTX 4090", "8.9"), ("RTX 4080", "8.9"), ("RTX 4070", "8.9"), ("RTX 4060", "8.9"),
    ("RTX 3090", "8.6"), ("RTX 3080", "8.6"), ("RTX 3070", "8.6"), ("RTX 3060", "8.6"),
    ("RTX 2080", "7.5"), ("RTX 2070", "7.5"), ("RTX 2060", "7.5"), ("TITAN RTX", "7.5"), ("TITAN V", "7.0"),
)
#: Data-center model tokens NVML brands Tesla (its "NVIDIA" brand for newer ones reads the same to
#: CUDA images, which list brand=tesla first and brand=nvidia too).
DATACENTER = frozenset(token for token, _arch in ARCHITECTURES if not token.startswith(("RTX", "TITAN")))


def _words(model: str) -> Tuple[str, ...]:
    cleaned = model.replace("-", " ").replace("_", " ")
    return tuple(word.upper() for word in cleaned.split())


def brand_of(model: str) -> str:
    """NVML's brand of ``model``, lower-cased (``tesla``, ``geforce``, ``quadro``...); ``unknown``."""
    lowered = " ".join(model.lower().replace("-", " ").split())
    for word, brand in NAMED_BRANDS:
        if word in lowered:
            return brand
    if any(word in DATACENTER for word in _words(model)):
        return "tesla"
    return "unknown"


def arch_of(model: str) -> Optional[str]:
    """The compute capability of ``model`` (``"8.0"`` for an A100), None when the table lacks it."""
    words = _words(model)
    joined = " " + " ".join(words) + " "
    for token, arch in ARCHITECTURES:
        if " " + token.upper() + " " in joined:
            return arch
    return None
