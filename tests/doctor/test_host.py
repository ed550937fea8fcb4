"""host checks: SELinux through <root>/sys/fs/selinux/enforce."""


def test_selinux_not_enabled(host):
    result = host.run("host-selinux")
    assert result.status == "ok" and "not enabled" in result.detail


def test_selinux_permissive(host):
    host.write("/sys/fs/selinux/enforce", "0")
    assert host.run("host-selinux").detail == "SELinux is permissive"


def test_selinux_enforcing(host):
    host.write("/sys/fs/selinux/enforce", "1")
    result = host.run("host-selinux")
    assert result.status == "warn" and "Insufficient Permissions" in result.detail
    assert "--security-opt label=disable" in result.hint and "restorecon" in result.hint
