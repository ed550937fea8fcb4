"""`brand` and `arch` in NVIDIA_REQUIRE_*: CUDA images' `brand=tesla,driver>=X,driver<Y` alternatives
hold on data-center GPUs (issue #20), from the model name the kernel module lists."""

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.gpu_models import arch_of, brand_of
from nvdocker_setup.driver.requirements import Facts, check

# A CUDA 12.2 base image's NVIDIA_REQUIRE_CUDA (nvidia/cuda:12.2.2-base-ubuntu22.04), verbatim.
CUDA_12_2 = ("cuda>=12.2 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471 "
             "brand=nvidia,driver>=470,driver<471 brand=nvidiartx,driver>=470,driver<471 "
             "brand=geforce,driver>=470,driver<471 brand=geforcertx,driver>=470,driver<471 "
             "brand=quadro,driver>=470,driver<471 brand=quadrortx,driver>=470,driver<471 "
             "brand=titan,driver>=470,driver<471 brand=titanrtx,driver>=470,driver<471 "
             "brand=tesla,driver>=525,driver<526 brand=unknown,driver>=525,driver<526 "
             "brand=nvidia,driver>=525,driver<526 brand=geforce,driver>=525,driver<526")


@pytest.mark.parametrize("model, brand, arch", [
    ("NVIDIA A100-SXM4-40GB", "tesla", "8.0"),
    ("NVIDIA H100 80GB HBM3", "tesla", "9.0"),
    ("Tesla V100-SXM2-16GB", "tesla", "7.0"),
    ("Tesla T4", "tesla", "7.5"),
    ("NVIDIA L4", "tesla", "8.9"),
    ("NVIDIA A10G", "tesla", "8.6"),
    ("NVIDIA GeForce RTX 4090", "geforcertx", "8.9"),
    ("NVIDIA GeForce GTX 1080", "geforce", None),
    ("Quadro RTX 8000", "quadrortx", None),
    ("Quadro P4000", "quadro", None),
    ("NVIDIA RTX A6000", "nvidiartx", "8.6"),
    ("NVIDIA RTX 6000 Ada Generation", "nvidiartx", "8.9"),
    ("NVIDIA TITAN RTX", "titanrtx", "7.5"),
    ("Some Future GPU", "unknown", None),
])
def test_brand_and_arch_from_the_model_name(model, brand, arch):
    assert brand_of(model) == brand
    assert arch_of(model) == arch


def test_a_cuda_images_brand_alternative_holds_on_a_datacenter_gpu():
    # driver 470.x is too old for cuda>=12.2: only the brand=tesla,driver>=470,driver<471 alternative
    # lets the image run (CUDA forward compatibility on a data-center GPU)
    a100 = Facts("470.239.06", "11.4", [("tesla", "8.0")])
    check({"NVIDIA_REQUIRE_CUDA": CUDA_12_2}, a100)
    geforce_on_470 = Facts("470.239.06", "11.4", [("geforce", "8.6")])
    check({"NVIDIA_REQUIRE_CUDA": CUDA_12_2}, geforce_on_470)  # brand=geforce,driver>=470... is listed too
    on_510 = Facts("510.108.03", "11.6", [("tesla", "8.0")])
    with pytest.raises(GpuSetupError, match="unsatisfied requirement NVIDIA_REQUIRE_CUDA"):
        check({"NVIDIA_REQUIRE_CUDA": CUDA_12_2}, on_510)


def test_every_gpu_must_meet_brand_and_arch():
    mixed = Facts("550.54.14", "12.4", [("tesla", "8.0"), ("tesla", "7.0")])
    check({"NVIDIA_REQUIRE_ARCH": "arch>=7.0"}, mixed)
    with pytest.raises(GpuSetupError, match="arch 7.0"):
        check({"NVIDIA_REQUIRE_ARCH": "arch>=8.0"}, mixed)
    check({"NVIDIA_REQUIRE_BRAND": "brand=tesla"}, mixed)
    check({"NVIDIA_REQUIRE_BRAND": "brand!=geforce"}, mixed)
    with pytest.raises(GpuSetupError, match="brand compares with"):
        check({"NVIDIA_REQUIRE_BRAND": "brand>=tesla"}, mixed)
    unknown = Facts("550.54.14", "12.4", [("unknown", None)])
    with pytest.raises(GpuSetupError, match="arch unknown"):
        check({"NVIDIA_REQUIRE_ARCH": "arch>=7.0"}, unknown)
