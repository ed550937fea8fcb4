"""Checks of host security settings that get in the way of GPU containers."""

from nvdocker_setup.doctor.checks import check, ok, warn
from nvdocker_setup.doctor.facts import Facts

GROUP = "host"
SELINUX_ENFORCE = "/sys/fs/selinux/enforce"


@check("host-selinux", GROUP, "SELinux does not block the GPU device nodes")
def host_selinux(facts: Facts):
    text = facts.read_host_text(SELINUX_ENFORCE)
    if text is None:
        return ok("SELinux is not enabled ({} does not exist)".format(SELINUX_ENFORCE))
    if text.strip() == "0":
        return ok("SELinux is permissive")
    return warn(
        "SELinux is enforcing: containers may fail with \"Failed to initialize NVML: Insufficient Permissions\" "
        "because the /dev/nvidia* nodes lack a label containers may use",
        "per container: `docker run --security-opt label=disable ...`; or label the nodes "
        "(`chcon -t container_file_t /dev/nvidia*`, made permanent with `semanage fcontext` + `restorecon -v /dev/nvidia*`); "
        "or load a policy module that lets container_t use them (e.g. NVIDIA's nvidia-container.pp)",
    )
