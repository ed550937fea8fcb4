/*
 * The runtime's createContainer hook, `update-ldcache`, in C: the same binary as the launcher,
 * started under the name "nvdocker-ldcache" (argv[0]; nvdocker-runtime.c dispatches on it).
 *
 * Why: a GPU container start used to pay a second Python interpreter start (~7-11 ms) plus the
 * hook's imports for this one step (issue #26); here the whole hook costs well under a
 * millisecond besides ldconfig itself. It does exactly what nvdocker_setup/hook/main.py
 * update_ldcache does when the runtime passes --rootfs, with the same argument rules, checks,
 * messages and exit statuses (tests/hook run every hook test against both); for anything else
 * (no --rootfs: the state on stdin, as from a CDI spec; prestart, poststart, poststop) it execs
 * that Python hook, with its argv and environment unchanged.
 *
 * Security (docs/security.md, "hook"): this runs as root on the host, before pivot_root, from
 * runc init inside the container's mount namespace, with the container's rootfs as working
 * directory; the rootfs is the image's. So: the working directory is "/" before anything else;
 * the rootfs must be absolute, a directory and never the host root; every directory inside it is
 * reached from the root's fd one component at a time with O_NOFOLLOW (a symlinked or odd
 * component means "leave it alone"); the conf file is written to a new O_EXCL|O_NOFOLLOW temp
 * file and renamed into place (a symlink, FIFO or device planted under its name is replaced,
 * never opened); links are made by symlinkat relative to such a directory fd, with a plain target
 * in the same directory, and an existing entry is left alone; a CUDA compat library is opened
 * only when lstat says it is a regular file, with O_NOFOLLOW|O_NONBLOCK, checked again on the
 * fd, and 64 bytes are read. ldconfig runs by absolute path with an explicit environment, in a
 * private mount namespace from which every procfs at or below the rootfs is detached (runc has
 * mounted the container's /proc there, and /proc/1/root leads out of ldconfig's chroot), and with
 * a deadline. Every failure is one bounded line on stderr (written without blocking) and status 1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "launcher.h"

#define PROGRAM "nvdocker-runtime-hook"
#define LD_CONF_NAME "00-nvdocker.conf"
#define DEFAULT_LDCONFIG "/sbin/ldconfig"
/* nvdocker_setup/driver/links.py MAX_LINKS, MAX_NAME_BYTES, MAX_DIR_CHARS (bytes here and there) */
#define MAX_LINKS 256
#define MAX_NAME_BYTES 255
#define MAX_DIR_BYTES 1024
/* nvdocker_setup/driver/compat.py */
#define COMPAT_LIBRARY_PREFIX "libcuda.so."
#define COMPAT_MAX_ENTRIES 256
#define MAX_VERSION_CHARS 32
#define MAX_VERSION_PARTS 4
#define ELF_HEADER_BYTES 64
/* The echo limit of a container-supplied value in a message (driver/errors.py ECHO_LIMIT). */
#define ECHO_LIMIT 200
#define MESSAGE_LIMIT 2000
/* ldconfig over a container root takes milliseconds; a minute means something is wrong (tests
 * build with a shorter one). */
#ifndef LDCONFIG_DEADLINE_S
#define LDCONFIG_DEADLINE_S 60
#endif
#define PROC_SUPER_MAGIC 0x9fa0

#ifdef NVDOCKER_SANITIZE
/* The sanitizer build the tests run (tests/support/hooks.py): a finding is exit status 99, which
 * no test expects; leaks at exit are not findings (the process is short-lived by design). */
const char *__asan_default_options(void);
const char *__ubsan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0:exitcode=99"; }
const char *__ubsan_default_options(void) { return "halt_on_error=1:exitcode=99:print_stacktrace=1"; }
#endif

static char *const safe_env[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL};

struct link {
	const char *target, *name;
	char *directory;
};

struct version {
	int parts;
	long value[MAX_VERSION_PARTS];
};

/* --dri-link NODE::NAME: /dev/dri/by-path/NAME -> ../NODE (hook/main.py parse_dri_links). */
struct dri_link {
	char *node;
	const char *name;
};

/* One bounded line "nvdocker-runtime-hook: MESSAGE[ (hint: HINT)]" on stderr, then status 1. */
static void hook_fail(const char *hint, const char *format, ...) __attribute__((format(printf, 2, 3), noreturn));
static void hook_fail(const char *hint, const char *format, ...)
{
	char text[MESSAGE_LIMIT + 64], message[MESSAGE_LIMIT + 1];
	va_list args;
	int len;

	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	len = snprintf(text, sizeof(text) - 1, "%s: %s%s%s%s", PROGRAM, message, hint ? " (hint: " : "", hint ? hint : "",
		       hint ? ")" : "");
	if (len < 0)
		len = 0;
	if ((size_t)len > sizeof(text) - 2)
		len = (int)sizeof(text) - 2;
	text[len++] = '\n';
	write_stderr_nonblocking(text, (size_t)len);
	exit(1);
}

/* A container- or caller-supplied value for a message: quoted, control bytes as '?', cut at
 * ECHO_LIMIT bytes with its length (driver/errors.py quoted()). Returns a static buffer. */
static const char *quoted(const char *value)
{
	static char out[ECHO_LIMIT + 64];
	size_t len = strlen(value), shown = len < ECHO_LIMIT ? len : ECHO_LIMIT, at = 0;

	out[at++] = '\'';
	for (size_t i = 0; i < shown; i++) {
		unsigned char c = (unsigned char)value[i];
		out[at++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[at++] = '\'';
	out[at] = '\0';
	if (len > shown)
		snprintf(out + at, sizeof(out) - at, "... (%zu bytes)", len);
	return out;
}

/* -- the Python hook, for what this one does not do --------------------------------------------- */

static void exec_python_hook(int argc, char **argv) __attribute__((noreturn));
static void exec_python_hook(int argc, char **argv)
{
	char **args = calloc((size_t)argc + 4, sizeof(char *));

	if (!args)
		hook_fail(NULL, "out of memory");
	args[0] = NVDOCKER_PYTHON;
	args[1] = "-I";
	args[2] = "-S";
	args[3] = NVDOCKER_HOOK_SCRIPT;
	memcpy(args + 4, argv + 1, (size_t)(argc - 1) * sizeof(char *));
	execv(args[0], args); /* -I: no PYTHON* variable of the environment counts */
	hook_fail(NULL, "cannot start the Python hook " NVDOCKER_PYTHON " " NVDOCKER_HOOK_SCRIPT ": %s", strerror(errno));
}

/* -- argument rules (driver/links.py, driver/compat.py) ----------------------------------------- */

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF): what Python can encode back. */
int valid_utf8(const char *text)
{
	const unsigned char *s = (const unsigned char *)text;

	while (*s) {
		unsigned char c = *s;
		int extra;
		unsigned long point;
		if (c < 0x80) {
			s++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			extra = 1, point = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			extra = 2, point = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			extra = 3, point = c & 0x07;
		} else {
			return 0;
		}
		for (int i = 1; i <= extra; i++) {
			if ((s[i] & 0xc0) != 0x80)
				return 0;
			point = (point << 6) | (s[i] & 0x3f);
		}
		if ((extra == 2 && (point < 0x800 || (point >= 0xd800 && point <= 0xdfff))) ||
		    (extra == 3 && (point < 0x10000 || point > 0x10ffff)))
			return 0;
		s += extra + 1;
	}
	return 1;
}

/* links.is_plain_name: one directory entry name, not "." or "..", at most 255 bytes. */
int is_plain_name(const char *name, size_t len)
{
	if (len == 0 || len > MAX_NAME_BYTES || memchr(name, '/', len))
		return 0;
	return !((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'));
}

/* links.is_plain_directory: "/" followed by plain names, at most 1024 bytes; not "/" itself. */
int is_plain_directory(const char *path, size_t len)
{
	if (len == 0 || path[0] != '/' || len > MAX_DIR_BYTES)
		return 0;
	for (size_t start = 1;;) {
		const char *slash = memchr(path + start, '/', len - start);
		size_t end = slash ? (size_t)(slash - path) : len;
		if (!is_plain_name(path + start, end - start))
			return 0;
		if (!slash)
			return 1;
		start = end + 1;
	}
}

/* links.parse_link: "TARGET::/dir/NAME"; 0 when it is not a valid link. */
int parse_link(const char *value, struct link *link)
{
	const char *sep = strstr(value, "::"), *path, *slash;

	if (!sep)
		return 0;
	path = sep + 2;
	slash = strrchr(path, '/');
	if (!slash || !is_plain_name(value, (size_t)(sep - value)) || !is_plain_name(slash + 1, strlen(slash + 1)) ||
	    !is_plain_directory(path, (size_t)(slash - path)))
		return 0;
	link->directory = strndup(path, (size_t)(slash - path));
	link->target = strndup(value, (size_t)(sep - value));
	link->name = slash + 1;
	if (!link->directory || !link->target)
		hook_fail(NULL, "out of memory");
	return 1;
}

/* hook/main.py parse_dri_links: NODE is card<N> or renderD<N> (1 to 7 ASCII digits), NAME plain. */
int parse_dri_link(const char *value, struct dri_link *link)
{
	const char *sep = strstr(value, "::"), *digits;
	size_t stem, len;

	if (!sep)
		return 0;
	stem = strncmp(value, "renderD", 7) == 0 ? 7 : 4;
	if (strncmp(value, stem == 7 ? "renderD" : "card", stem) != 0)
		return 0;
	digits = value + stem;
	len = (size_t)(sep - digits);
	if (sep < digits || len == 0 || len > 7 || strspn(digits, "0123456789") != len ||
	    !is_plain_name(sep + 2, strlen(sep + 2)))
		return 0;
	link->node = strndup(value, (size_t)(sep - value));
	if (!link->node)
		hook_fail(NULL, "out of memory");
	link->name = sep + 2;
	return 1;
}

/* compat.parse_version: 2 to 4 parts of 1 to 8 ASCII digits, at most 32 characters. */
int parse_version(const char *text, struct version *version)
{
	size_t len = strlen(text);

	if (len > MAX_VERSION_CHARS)
		return 0;
	version->parts = 0;
	for (const char *part = text;;) {
		size_t digits = strspn(part, "0123456789");
		if (digits == 0 || digits > 8 || version->parts == MAX_VERSION_PARTS || (part[digits] && part[digits] != '.'))
			return 0;
		version->value[version->parts++] = strtol(part, NULL, 10);
		if (!part[digits])
			break;
		part += digits + 1;
	}
	return version->parts >= 2;
}

/* Python's tuple comparison: the first differing part, else the shorter is smaller. */
static int compare_versions(const struct version *a, const struct version *b)
{
	for (int i = 0; i < a->parts && i < b->parts; i++)
		if (a->value[i] != b->value[i])
			return a->value[i] < b->value[i] ? -1 : 1;
	return (a->parts > b->parts) - (a->parts < b->parts);
}

/* -- the container root --------------------------------------------------------------------------- */

/* hook/main.py checked_rootfs: absolute, not the host's root (by inode or by real path), a directory. */
static void check_rootfs(const char *rootfs)
{
	struct stat found, host;
	char real[PATH_MAX];

	if (rootfs[0] != '/')
		hook_fail(NULL, "the container root must be an absolute path, got %s", quoted(rootfs));
	if (stat(rootfs, &found) != 0 || stat("/", &host) != 0)
		hook_fail(NULL, "cannot use the container root %s: %s", quoted(rootfs), strerror(errno));
	if ((found.st_dev == host.st_dev && found.st_ino == host.st_ino) ||
	    (realpath(rootfs, real) && strcmp(real, "/") == 0))
		hook_fail("a container root must be its own directory (OCI root.path)",
			  "refusing to update the ld cache of the container root %s: it is the host's root directory",
			  quoted(rootfs));
	if (!S_ISDIR(found.st_mode))
		hook_fail(NULL, "the container root %s is not a directory", quoted(rootfs));
}

static int open_root(const char *rootfs)
{
	int fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		hook_fail(NULL, "cannot open the container root %s: %s", quoted(rootfs), strerror(errno));
	return fd;
}

/* Directory `name` under `parent` without following a symlink; -1 with errno 0 when it is
 * missing, a symlink or not a directory (left alone), -1 with errno set on another error. */
static int existing_directory_in(int parent, const char *name)
{
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0 && (errno == ENOTDIR || errno == ENOENT || errno == ELOOP))
		errno = 0;
	return fd;
}

/* `directory` (a plain directory) inside the root open as `root_fd`, one component at a time. */
static int directory_fd(int root_fd, const char *directory)
{
	char name[MAX_NAME_BYTES + 1];
	int fd = dup(root_fd);

	if (fd < 0)
		return -1;
	for (const char *part = directory + 1; *part;) {
		size_t len = strcspn(part, "/");
		memcpy(name, part, len);
		name[len] = '\0';
		int next = existing_directory_in(fd, name), error = errno;
		close(fd);
		if (next < 0)
			return errno = error, -1;
		fd = next;
		part += len + (part[len] == '/');
	}
	return fd;
}

/* hook/main.py create_links_in: each link by symlinkat in its directory; an existing entry stays. */
static void create_links(const char *rootfs, struct link *links, int count)
{
	int root_fd, fd = -1;
	const char *open_dir = NULL;

	if (count == 0)
		return;
	root_fd = open_root(rootfs);
	for (int i = 0; i < count; i++) {
		if (!open_dir || strcmp(open_dir, links[i].directory) != 0) {
			if (fd >= 0)
				close(fd);
			open_dir = links[i].directory;
			fd = directory_fd(root_fd, open_dir);
			if (fd < 0 && errno)
				hook_fail(NULL, "cannot create the library links in the container: %s", strerror(errno));
		}
		if (fd < 0)
			continue;
		if (symlinkat(links[i].target, fd, links[i].name) != 0 && errno != EEXIST)
			hook_fail(NULL, "cannot create the library links in the container: %s", strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	close(root_fd);
}

/* hook/main.py create_dri_links_in: /dev and /dev/dri must be plain directories (runc made them),
 * by-path is created when missing; O_NOFOLLOW per step, symlinkat, an existing name stays. */
static void create_dri_links(const char *rootfs, struct dri_link *links, int count)
{
	static const char *const path[] = {"dev", "dri", "by-path"};
	char target[24]; /* "../renderD" and at most 7 digits */
	int fds[4], opened = 0;

	if (count == 0)
		return;
	fds[opened++] = open_root(rootfs);
	for (int i = 0; i < 3; i++) {
		if (i == 2 && mkdirat(fds[opened - 1], path[i], 0755) != 0 && errno != EEXIST)
			goto failed;
		int fd = existing_directory_in(fds[opened - 1], path[i]);
		if (fd < 0) {
			if (errno)
				goto failed;
			goto done;
		}
		fds[opened++] = fd;
	}
	for (int i = 0; i < count; i++) {
		if (snprintf(target, sizeof(target), "../%s", links[i].node) >= (int)sizeof(target))
			hook_fail(NULL, "--dri-link node %s is too long", quoted(links[i].node));
		if (symlinkat(target, fds[opened - 1], links[i].name) != 0 && errno != EEXIST)
			goto failed;
	}
done:
	while (opened > 0)
		close(fds[--opened]);
	return;
failed:
	hook_fail(NULL, "cannot create the /dev/dri/by-path links in the container: %s", strerror(errno));
}

/* compat.is_elf_shared_object: an ELF header (either class and byte order) of type ET_DYN. */
int is_elf_shared_object(const unsigned char *header, size_t len)
{
	if (len < 18 || memcmp(header, "\177ELF", 4) != 0 || (header[4] != 1 && header[4] != 2) ||
	    (header[5] != 1 && header[5] != 2))
		return 0;
	unsigned kind = header[5] == 1 ? (unsigned)(header[16] | header[17] << 8) : (unsigned)(header[16] << 8 | header[17]);
	return kind == 3;
}

#define NOTE_SECTION ".note.cuda.fwd_compatibility"
#define NOTE_OWNER "NVIDIA Corporation"
#define SHT_NOTE_TYPE 7
#define MAX_SECTIONS 4096
#define MAX_SECTION_BYTES (64 << 10)
#define MAX_DRIVER_BRANCHES 64

static int json_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* compat.parse_driver_branches: the "Driver": [N, ...] list of the note's description; the
 * number of branches, -1 when missing or malformed. */
int parse_driver_branches(const unsigned char *text, size_t len, long *branches)
{
	size_t at = 0, count = 0;

	/* the first "driver" key (any ASCII case, as Go's encoding/json matches it) followed by ':' */
	for (;; at++) {
		while (at + 8 <= len && strncasecmp((const char *)text + at, "\"driver\"", 8) != 0)
			at++;
		if (at + 8 > len)
			return -1;
		size_t after = at + 8;
		while (after < len && json_space(text[after]))
			after++;
		if (after < len && text[after] == ':') {
			at = after;
			break;
		}
	}
	for (at++; at < len && json_space(text[at]); at++)
		;
	if (at >= len || text[at] != '[')
		return -1;
	for (at++; at < len && json_space(text[at]); at++)
		;
	if (at < len && text[at] == ']')
		return 0;
	for (;;) {
		size_t start = at;
		long value = 0;
		while (at < len && text[at] >= '0' && text[at] <= '9' && at - start < 10)
			value = value * 10 + (text[at++] - '0');
		if (at - start < 1 || at - start > 9 || count >= MAX_DRIVER_BRANCHES)
			return -1;
		branches[count++] = value;
		while (at < len && json_space(text[at]))
			at++;
		if (at < len && text[at] == ']')
			return (int)count;
		if (at >= len || text[at] != ',')
			return -1;
		for (at++; at < len && json_space(text[at]); at++)
			;
	}
}

static uint64_t read_uint(const unsigned char *p, int size, int little)
{
	uint64_t value = 0;

	for (int i = 0; i < size; i++)
		value |= (uint64_t)p[little ? i : size - 1 - i] << (8 * i);
	return value;
}

static uint64_t align_up(uint64_t size, uint64_t to)
{
	if (to == 0 || (to & (to - 1)) != 0 || to > 4096)
		to = 1;
	return (size + to - 1) & ~(to - 1);
}

/* compat._trimmed: data[start:start+length] (Go's bounds) without leading/trailing NULs. */
static const unsigned char *trimmed(const unsigned char *data, size_t len, uint64_t start, uint64_t length, size_t *out)
{
	if (len == 0)
		return *out = 0, data;
	if (start > len - 1)
		start = len - 1;
	uint64_t end = length > len - start ? len : start + length;
	while (start < end && data[start] == 0)
		start++;
	while (end > start && data[end - 1] == 0)
		end--;
	*out = (size_t)(end - start);
	return data + start;
}

static ssize_t pread_all(int fd, void *buffer, size_t size, uint64_t offset)
{
	size_t got = 0;

	if (offset > (uint64_t)INT64_MAX)
		return -1;
	while (got < size) {
		ssize_t n = pread(fd, (char *)buffer + got, size - got, (off_t)(offset + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* compat.note_branches: the driver branches of the forward-compatibility note of the ELF file
 * `fd` (`header`: its first bytes), -1 when it has none usable. Bounded like the Python. */
int note_branches(int fd, const unsigned char *header, size_t header_len, long *branches)
{
	int wide = header[4] == 2, little = header[5] == 1, result = -1;
	uint64_t shoff, entsize, count, names_index;
	unsigned char *table = NULL, *names = NULL, *data = NULL;

	if (header_len < (size_t)(wide ? 64 : 52))
		return -1;
	shoff = wide ? read_uint(header + 0x28, 8, little) : read_uint(header + 0x20, 4, little);
	entsize = read_uint(header + (wide ? 0x3A : 0x2E), 2, little);
	count = read_uint(header + (wide ? 0x3C : 0x30), 2, little);
	names_index = read_uint(header + (wide ? 0x3E : 0x32), 2, little);
	if (entsize != (wide ? 64u : 40u) || count == 0 || count > MAX_SECTIONS || names_index >= count)
		return -1;
	table = malloc(entsize * count);
	if (!table || pread_all(fd, table, entsize * count, shoff) != (ssize_t)(entsize * count))
		goto done;
#define SECTION_FIELD(index, wide_at, narrow_at, narrow_size)                                                  \
	read_uint(table + (index) * entsize + (wide ? (wide_at) : (narrow_at)), wide ? ((wide_at) == 0 || (wide_at) == 4 ? 4 : 8) : (narrow_size), little)
	uint64_t names_offset = SECTION_FIELD(names_index, 24, 16, 4), names_size = SECTION_FIELD(names_index, 32, 20, 4);
	size_t names_len = names_size < MAX_SECTION_BYTES ? (size_t)names_size : MAX_SECTION_BYTES;
	names = malloc(names_len + 1);
	ssize_t names_got = names ? pread_all(fd, names, names_len, names_offset) : -1;
	if (names_got < 0)
		goto done;
	for (uint64_t index = 0; index < count; index++) {
		uint64_t name = SECTION_FIELD(index, 0, 0, 4), kind = SECTION_FIELD(index, 4, 4, 4);
		uint64_t offset = SECTION_FIELD(index, 24, 16, 4), size = SECTION_FIELD(index, 32, 20, 4);
		uint64_t align = SECTION_FIELD(index, 48, 32, 4);
		if (kind != SHT_NOTE_TYPE || name >= (uint64_t)names_got ||
		    (uint64_t)names_got - name < sizeof(NOTE_SECTION) ||
		    memcmp(names + name, NOTE_SECTION, sizeof(NOTE_SECTION)) != 0) /* with its NUL */
			continue;
		if (size > MAX_SECTION_BYTES || size < 12)
			goto done;
		data = malloc((size_t)size);
		ssize_t got = data ? pread_all(fd, data, (size_t)size, offset) : -1;
		if (got < 12)
			goto done;
		uint64_t name_size = read_uint(data, 4, little), description_size = read_uint(data + 4, 4, little);
		size_t owner_len, description_len;
		if (name_size == 0 || description_size == 0)
			goto done;
		const unsigned char *owner = trimmed(data, (size_t)got, 12, align_up(name_size, align), &owner_len);
		if (owner_len != sizeof(NOTE_OWNER) - 1 || memcmp(owner, NOTE_OWNER, owner_len) != 0)
			goto done;
		const unsigned char *description =
			trimmed(data, (size_t)got, 12 + align_up(name_size, align), description_size, &description_len);
		result = parse_driver_branches(description, description_len, branches);
		goto done;
	}
#undef SECTION_FIELD
done:
	free(table);
	free(names);
	free(data);
	return result;
}

/* compat._read_library: whether regular file `name` under `dir_fd` is an ELF shared object
 * (opened only when lstat says it is a regular file, never through a symlink, never blocking,
 * checked again on the fd), and the driver branches of its note (-1: none usable). */
static int read_library(int dir_fd, const char *name, int *branch_count, long *branches)
{
	unsigned char header[ELF_HEADER_BYTES];
	struct stat before, found;
	ssize_t got;
	int fd, shared = 0;

	*branch_count = -1;
	if (fstatat(dir_fd, name, &before, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(before.st_mode))
		return 0;
	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	got = fstat(fd, &found) == 0 && S_ISREG(found.st_mode) && found.st_dev == before.st_dev &&
			      found.st_ino == before.st_ino
		      ? pread_all(fd, header, sizeof(header), 0)
		      : -1;
	if (got > 0 && is_elf_shared_object(header, (size_t)got)) {
		shared = 1;
		*branch_count = note_branches(fd, header, (size_t)got, branches);
	}
	close(fd);
	return shared;
}

/* hook/main.py cuda_compat_dir_in + compat.compat_library_in: whether `compat_dir` in the
 * container has a libcuda.so.<version> newer than the host's driver and usable on it (the host's
 * branch in its note's list; without a usable note, a newer branch). */
static int uses_compat_dir(const char *rootfs, const char *compat_dir, const struct version *host)
{
	struct version best = {0, {0}}, version;
	int root_fd = open_root(rootfs), fd, found = 0, count = 0;
	DIR *dir;
	struct dirent *entry;

	fd = directory_fd(root_fd, compat_dir);
	close(root_fd);
	if (fd < 0)
		return 0;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return 0;
	}
	errno = 0;
	while ((entry = readdir(dir)) != NULL) {
		const char *name = entry->d_name;
		long branches[MAX_DRIVER_BRANCHES];
		int branch_count, usable = 0;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (count++ >= COMPAT_MAX_ENTRIES)
			break;
		if (strncmp(name, COMPAT_LIBRARY_PREFIX, strlen(COMPAT_LIBRARY_PREFIX)) != 0 ||
		    !parse_version(name + strlen(COMPAT_LIBRARY_PREFIX), &version))
			continue;
		if (compare_versions(&version, host) <= 0 || (found && compare_versions(&version, &best) <= 0))
			continue;
		if (read_library(dirfd(dir), name, &branch_count, branches)) {
			if (branch_count >= 0) {
				for (int i = 0; i < branch_count; i++)
					usable |= branches[i] == host->value[0];
			} else {
				usable = version.value[0] > host->value[0];
			}
			if (usable) {
				best = version;
				found = 1;
			}
		}
		errno = 0;
	}
	if (errno)
		found = 0; /* as the Python hook: a failed listing leaves the container as it is */
	closedir(dir);
	return found;
}

/* hook/main.py write_ld_conf_in: etc/ld.so.conf.d/00-nvdocker.conf by temp file and rename; 0
 * when /etc or /etc/ld.so.conf.d is not a plain directory or the name is a directory. */
static int write_ld_conf(const char *rootfs, char **folders, int count)
{
	static const char *const path[] = {"etc", "ld.so.conf.d"};
	char temp[64];
	int fds[3], opened = 0, written = 0, fd;

	fds[opened++] = open_root(rootfs);
	for (int i = 0; i < 2; i++) {
		if (mkdirat(fds[opened - 1], path[i], 0755) != 0 && errno != EEXIST)
			goto failed;
		fd = existing_directory_in(fds[opened - 1], path[i]);
		if (fd < 0) {
			if (errno)
				goto failed;
			goto done; /* a symlinked (or otherwise odd) directory: leave it alone */
		}
		fds[opened++] = fd;
	}
	fd = fds[opened - 1];
	snprintf(temp, sizeof(temp), "." LD_CONF_NAME ".%ld.tmp", (long)getpid());
	if (unlinkat(fd, temp, 0) != 0 && errno != ENOENT) {
		if (errno == EISDIR)
			goto done;
		goto failed;
	}
	int out = openat(fd, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (out < 0)
		goto failed;
	FILE *file = fdopen(out, "w");
	if (!file) {
		close(out);
		goto failed;
	}
	fputs("# written by " PROGRAM " for the NVIDIA driver libraries\n", file);
	for (int i = 0; i < count; i++)
		fprintf(file, "%s\n", folders[i]);
	if (fclose(file) != 0)
		goto failed;
	if (renameat(fd, temp, fd, LD_CONF_NAME) != 0) {
		int error = errno;
		unlinkat(fd, temp, 0);
		errno = error;
		if (error == EISDIR || error == EEXIST || error == ENOTEMPTY)
			goto done;
		goto failed;
	}
	written = 1;
done:
	while (opened > 0)
		close(fds[--opened]);
	return written;
failed:
	hook_fail(NULL, "cannot write /etc/ld.so.conf.d/" LD_CONF_NAME " in the container: %s", strerror(errno));
}

/* -- ldconfig, confined --------------------------------------------------------------------------- */

/* mountinfo writes space, tab, newline and backslash in paths as \ooo; in place. */
static void unescape_mountinfo(char *field)
{
	char *out = field;

	for (char *in = field; *in;) {
		if (in[0] == '\\' && in[1] >= '0' && in[1] <= '7' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' &&
		    in[3] <= '7') {
			*out++ = (char)((in[1] - '0') << 6 | (in[2] - '0') << 3 | (in[3] - '0'));
			in += 4;
		} else {
			*out++ = *in++;
		}
	}
	*out = '\0';
}

/* The whole of /proc/self/mountinfo (the kernel writes it; a host can have tens of thousands of
 * mounts, and the container's procfs, mounted last, is at the end: a reader that stopped early
 * would miss exactly that line and leave ldconfig a way out, so there is no cap but memory). */
static char *read_mountinfo(void)
{
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	size_t size = 0, capacity = 1 << 16;
	char *data = malloc(capacity + 1);
	ssize_t n;

	if (fd < 0 || !data) {
		free(data);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	while ((n = read(fd, data + size, capacity - size)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		size += (size_t)n;
		if (size == capacity) {
			char *bigger = capacity < ((size_t)1 << 40) ? realloc(data, capacity * 2 + 1) : NULL;
			if (!bigger) {
				n = -1;
				break;
			}
			data = bigger;
			capacity *= 2;
		}
	}
	close(fd);
	if (n < 0) { /* unreadable or out of memory: no answer, so the caller fails closed */
		free(data);
		return NULL;
	}
	data[size] = '\0';
	return data;
}

/* Mount points of procfs at or below `top` (a real path), deepest first; NULL-terminated,
 * pointing into `*buffer` (freed by the caller). NULL when mountinfo cannot be read. */
static char **proc_mounts_below(const char *top, char **buffer)
{
	size_t top_len = strlen(top), count = 0, capacity = 16;
	char **points = malloc(capacity * sizeof(char *));
	char *save = NULL;

	*buffer = read_mountinfo();
	if (!*buffer || !points) {
		free(points);
		return NULL;
	}
	for (char *line = strtok_r(*buffer, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *dash = strstr(line, " - "), *fields[5];
		int n = 0;
		if (!dash || strncmp(dash + 3, "proc ", 5) != 0)
			continue;
		*dash = '\0';
		for (char *field = line, *end; n < 5 && field; n++) {
			fields[n] = field;
			end = strchr(field, ' ');
			field = end ? (*end = '\0', end + 1) : NULL;
		}
		if (n < 5)
			continue;
		unescape_mountinfo(fields[4]);
		if (strncmp(fields[4], top, top_len) != 0 || !(fields[4][top_len] == '\0' || fields[4][top_len] == '/'))
			continue;
		if (count + 1 >= capacity) {
			char **bigger = realloc(points, (capacity *= 2) * sizeof(char *));
			if (!bigger) {
				free(points);
				return NULL;
			}
			points = bigger;
		}
		points[count++] = fields[4];
	}
	points[count] = NULL;
	for (size_t i = 1; i < count; i++) /* deepest (longest) first; a handful of entries */
		for (size_t j = i; j > 0 && strlen(points[j]) > strlen(points[j - 1]); j--) {
			char *swap = points[j];
			points[j] = points[j - 1];
			points[j - 1] = swap;
		}
	return points;
}

/* This process into a private mount namespace without any procfs at or below `rootfs`;
 * an error text (static) when that cannot be done, NULL on success. */
static const char *confine_mounts(const char *rootfs)
{
	static char reason[PATH_MAX + 128];
	char real[PATH_MAX], *buffer = NULL, **points;

	if (!realpath(rootfs, real))
		return snprintf(reason, sizeof(reason), "resolving the root: %s", strerror(errno)), reason;
	if (unshare(CLONE_NEWNS) != 0)
		return snprintf(reason, sizeof(reason), "unshare(CLONE_NEWNS): %s", strerror(errno)), reason;
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return snprintf(reason, sizeof(reason), "making the mount namespace private: %s", strerror(errno)), reason;
	points = proc_mounts_below(real, &buffer);
	if (!points)
		return free(buffer), "cannot read /proc/self/mountinfo";
	for (char **point = points; *point; point++)
		if (umount2(*point, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
			snprintf(reason, sizeof(reason), "detaching %s: %s", *point, strerror(errno));
			free(points);
			free(buffer);
			return reason;
		}
	free(points);
	free(buffer);
	points = proc_mounts_below(real, &buffer);
	if (!points || points[0]) {
		snprintf(reason, sizeof(reason), "procfs still mounted at %s", points ? points[0] : "(mountinfo unreadable)");
		free(points);
		free(buffer);
		return reason;
	}
	free(points);
	free(buffer);
	/* the backstop: whatever mountinfo said, the container's /proc must not be a procfs now;
	 * reached without following a symlink (an image's /proc -> /some/host/path is no procfs of
	 * the container's, and root must not look up a host path the image chose) */
	struct statfs fs;
	int root_fd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int proc_fd = root_fd >= 0 ? openat(root_fd, "proc", O_PATH | O_NOFOLLOW | O_CLOEXEC) : -1;
	int procfs = proc_fd >= 0 && fstatfs(proc_fd, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
	if (proc_fd >= 0)
		close(proc_fd);
	if (root_fd >= 0)
		close(root_fd);
	if (procfs) {
		snprintf(reason, sizeof(reason), "procfs still mounted at %s/proc", real);
		return reason;
	}
	return NULL;
}

/* ldconfig by absolute path with safe_env, our stdout/stderr, and a deadline; its exit status. */
static int run_ldconfig(char **argv)
{
	posix_spawnattr_t attr;
	sigset_t chld, old;
	struct timespec deadline, now, wait;
	int status;
	pid_t pid;

	signal(SIGCHLD, SIG_DFL); /* an inherited SIG_IGN would reap ldconfig before we see its status */
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, &old);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	errno = posix_spawn(&pid, argv[0], NULL, &attr, argv, safe_env);
	posix_spawnattr_destroy(&attr);
	if (errno)
		hook_fail(NULL, "cannot run %s: %s", argv[0], strerror(errno));
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += LDCONFIG_DEADLINE_S;
	for (;;) {
		pid_t done = waitpid(pid, &status, WNOHANG);
		if (done == pid)
			break;
		if (done < 0 && errno != EINTR)
			hook_fail(NULL, "waiting for %s: %s", argv[0], strerror(errno));
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			hook_fail("the container's ld cache could not be refreshed", "%s did not finish within %d s and was killed",
				  argv[0], LDCONFIG_DEADLINE_S);
		}
		wait.tv_sec = deadline.tv_sec - now.tv_sec;
		wait.tv_nsec = deadline.tv_nsec - now.tv_nsec;
		if (wait.tv_nsec < 0)
			wait.tv_sec--, wait.tv_nsec += 1000000000L;
		sigtimedwait(&chld, NULL, &wait);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

/* -- update-ldcache --------------------------------------------------------------------------------- */

struct options {
	const char *ldconfig, *rootfs, *compat_dir, *host_version;
	char **folders;
	const char **link_values, **dri_values;
	int folder_count, link_count, dri_count;
};

/* hook/main.py parse_options: "--name value" / "--name=value", any number of leading dashes. */
static void parse_options(int argc, char **argv, int index, struct options *options)
{
	static const char *const single[] = {"ldconfig", "rootfs", "cuda-compat-dir", "host-driver-version"};
	const char **slots[] = {&options->ldconfig, &options->rootfs, &options->compat_dir, &options->host_version};

	options->folders = calloc((size_t)argc, sizeof(char *));
	options->link_values = calloc((size_t)argc, sizeof(char *));
	options->dri_values = calloc((size_t)argc, sizeof(char *));
	if (!options->folders || !options->link_values || !options->dri_values)
		hook_fail(NULL, "out of memory");
	while (index < argc) {
		const char *arg = argv[index], *name = arg + strspn(arg, "-"), *eq = strchr(name, '='), *value;
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		int slot = -1, repeated = 0;
		if (len == 6 && strncmp(name, "folder", 6) == 0)
			repeated = 1;
		else if (len == 4 && strncmp(name, "link", 4) == 0)
			repeated = 2;
		else if (len == 8 && strncmp(name, "dri-link", 8) == 0)
			repeated = 3;
		for (int i = 0; i < 4 && !repeated; i++)
			if (strlen(single[i]) == len && strncmp(single[i], name, len) == 0)
				slot = i;
		if (arg[0] != '-' || (!repeated && slot < 0))
			hook_fail(NULL, "unexpected argument %s", quoted(arg));
		if (eq) {
			value = eq + 1;
		} else {
			if (index + 1 >= argc)
				hook_fail(NULL, "%s needs a value", arg);
			value = argv[++index];
		}
		index++;
		if (repeated == 1)
			options->folders[options->folder_count++] = (char *)value;
		else if (repeated == 2)
			options->link_values[options->link_count++] = value;
		else if (repeated == 3)
			options->dri_values[options->dri_count++] = value;
		else
			*slots[slot] = value;
	}
}

static int update_ldcache(int argc, char **argv, int index)
{
	struct options options = {0};
	struct link *links;
	struct version host;
	const char *reason;

	parse_options(argc, argv, index, &options);
	if (options.link_count > MAX_LINKS)
		hook_fail(NULL, "%d --link options; at most %d are accepted", options.link_count, MAX_LINKS);
	links = calloc((size_t)options.link_count + 1, sizeof(struct link));
	if (!links)
		hook_fail(NULL, "out of memory");
	for (int i = 0; i < options.link_count; i++)
		if (!parse_link(options.link_values[i], &links[i]))
			hook_fail(NULL,
				  "--link must be TARGET::/absolute/dir/NAME with plain names (no '/', '..' or NUL in TARGET and "
				  "NAME), got %s",
				  quoted(options.link_values[i]));
	if (options.dri_count > MAX_LINKS)
		hook_fail(NULL, "%d --dri-link options; at most %d are accepted", options.dri_count, MAX_LINKS);
	struct dri_link *dri = calloc((size_t)options.dri_count + 1, sizeof(struct dri_link));
	if (!dri)
		hook_fail(NULL, "out of memory");
	for (int i = 0; i < options.dri_count; i++)
		if (!parse_dri_link(options.dri_values[i], &dri[i]))
			hook_fail(NULL, "--dri-link must be card<N>::NAME or renderD<N>::NAME with a plain NAME, got %s",
				  quoted(options.dri_values[i]));
	if (!options.compat_dir != !options.host_version)
		hook_fail(NULL, "--cuda-compat-dir and --host-driver-version go together");
	if (options.compat_dir && !is_plain_directory(options.compat_dir, strlen(options.compat_dir)))
		hook_fail(NULL, "--cuda-compat-dir must be an absolute, normalized path, got %s", quoted(options.compat_dir));
	if (options.host_version && !parse_version(options.host_version, &host))
		hook_fail(NULL, "--host-driver-version must be a driver version such as 550.54.14, got %s",
			  quoted(options.host_version));
	for (int i = 0; i < options.folder_count; i++) {
		const char *folder = options.folders[i];
		int dot_dot = strcmp(folder, "..") == 0 || strncmp(folder, "../", 3) == 0 || strstr(folder, "/../") ||
			      (strlen(folder) >= 3 && strcmp(folder + strlen(folder) - 3, "/..") == 0);
		if (folder[0] != '/' || dot_dot || !valid_utf8(folder))
			hook_fail(NULL, "--folder must be an absolute path inside the container, got %s", quoted(folder));
	}
	const char *ldconfig = options.ldconfig && *options.ldconfig ? options.ldconfig : DEFAULT_LDCONFIG;
	if (ldconfig[0] != '/')
		hook_fail(NULL, "--ldconfig must be an absolute path on the host, got %s", quoted(ldconfig));
	if (!options.rootfs)
		return -1; /* the state on stdin: the Python hook reads it */
	check_rootfs(options.rootfs);
	create_links(options.rootfs, links, options.link_count); /* first: ldconfig indexes them too */
	create_dri_links(options.rootfs, dri, options.dri_count);
	if (options.folder_count == 0)
		return 0;
	if (options.compat_dir && uses_compat_dir(options.rootfs, options.compat_dir, &host)) {
		/* first in the conf and on ldconfig's command line: of two libraries with one SONAME,
		 * the cache lists the one scanned first, first */
		int kept = 1;
		char **ordered = calloc((size_t)options.folder_count + 1, sizeof(char *));
		if (!ordered)
			hook_fail(NULL, "out of memory");
		ordered[0] = (char *)options.compat_dir;
		for (int i = 0; i < options.folder_count; i++)
			if (strcmp(options.folders[i], options.compat_dir) != 0)
				ordered[kept++] = options.folders[i];
		options.folders = ordered;
		options.folder_count = kept;
	}
	write_ld_conf(options.rootfs, options.folders, options.folder_count);
	reason = confine_mounts(options.rootfs);
	if (reason)
		hook_fail("the hook needs CAP_SYS_ADMIN to give ldconfig a private mount namespace",
			  "%s was not run: it could not be confined away from the container's /proc: %s", ldconfig, reason);
	char **args = calloc((size_t)options.folder_count + 4, sizeof(char *));
	if (!args)
		hook_fail(NULL, "out of memory");
	args[0] = (char *)ldconfig;
	args[1] = "-r";
	args[2] = (char *)options.rootfs;
	memcpy(args + 3, options.folders, (size_t)options.folder_count * sizeof(char *));
	int status = run_ldconfig(args);
	if (status != 0)
		hook_fail("the container's ld cache could not be refreshed; see ldconfig's message above",
			  "%s -r %s failed with status %d", ldconfig, options.rootfs, status);
	return 0;
}

int ldcache_hook_main(int argc, char **argv)
{
	int index = 1;

	/* runc starts a createContainer hook in the container's rootfs: nothing may depend on it */
	if (chdir("/") != 0)
		hook_fail(NULL, "cannot change to /: %s", strerror(errno));
	while (index < argc && argv[index][0] == '-') /* NVIDIA's global flags: -debug, -config FILE */
		index += strcmp(argv[index] + strspn(argv[index], "-"), "config") == 0 ? 2 : 1;
	if (index < argc && strcmp(argv[index], "update-ldcache") == 0) {
		int status = update_ldcache(argc, argv, index + 1);
		if (status >= 0)
			return status;
	}
	exec_python_hook(argc, argv);
}
