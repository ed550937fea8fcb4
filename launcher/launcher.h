/* What the launcher (nvdocker-runtime.c) and its ld cache hook (ldcache-hook.c) share. */
#ifndef NVDOCKER_LAUNCHER_H
#define NVDOCKER_LAUNCHER_H

#include <stddef.h>

#ifndef NVDOCKER_PYTHON
#define NVDOCKER_PYTHON "/usr/bin/python3"
#endif
#ifndef NVDOCKER_RUNTIME_SCRIPT
#define NVDOCKER_RUNTIME_SCRIPT "/usr/lib/python3/dist-packages/nvdocker_setup/runtime/__main__.py"
#endif
#ifndef NVDOCKER_HOOK_SCRIPT
#define NVDOCKER_HOOK_SCRIPT "/usr/lib/python3/dist-packages/nvdocker_setup/hook/__main__.py"
#endif
/* The argv[0] under which this binary is the createContainer hook (ldcache-hook.c); the Python
 * create step names it in the hook entries it adds (nvdocker_setup/runtime/config.py). */
#define LDCACHE_HOOK_NAME "nvdocker-ldcache"

/* One write to stderr that cannot block (O_NONBLOCK for the call; EAGAIN loses the rest). */
void write_stderr_nonblocking(const char *text, size_t len);
/* The hook: `update-ldcache ... --rootfs DIR` here, anything else by the Python hook. */
int ldcache_hook_main(int argc, char **argv);

/* Exposed for the fuzz and unit harness (tests/hook/fuzz_hook_args.c). */
struct link;
struct version;
int valid_utf8(const char *text);
int is_plain_name(const char *name, size_t len);
int is_plain_directory(const char *path, size_t len);
int is_elf_shared_object(const unsigned char *header, size_t len);

#endif
