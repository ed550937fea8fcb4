/*
 * nvdocker-runtime: the OCI runtime dockerd's shim calls for every container operation.
 *
 * A Python interpreter takes ~15 ms to start; runc answers `state` in ~2 ms. So this launcher
 * execs the real runtime (runc by default) directly, with the identical argv, for everything
 * except a `create` that may request GPUs, which it hands to the Python runtime
 * (nvdocker_setup/runtime) to edit the bundle's config.json first.
 *
 * "May request GPUs": config.json contains one of the strings every request needs (see
 * request_markers). Without them no request is possible, the spec must stay untouched anyway,
 * and Python is skipped; with one, Python decides exactly.
 *
 * Real runtime: the `runtimes` list of the [runtime] section of /etc/nvdocker/runtime.conf (or
 * the file named by NVDOCKER_RUNTIME_CONFIG), default "runc crun"; the first executable one
 * found (bare names on PATH) that is not this program. As root, the file counts only when root
 * alone could have written it, and a runtime only when nobody else could replace it
 * (trusted_path): otherwise a local user would choose what root runs for every container. The INI rules match
 * nvdocker_setup/runtime/config.py, and the argv rules nvdocker_setup/runtime/args.py.
 *
 * Build: scripts/build-launcher.sh [OUTDIR] (sets NVDOCKER_PYTHON and NVDOCKER_RUNTIME_SCRIPT).
 *
 * Trust: our argv and environment come from containerd's shim (itself started by containerd with
 * dockerd's or the service's environment), never from the container, so the real runtime and
 * Python are exec'd with the environment as it is: it is how an administrator (or a test) passes
 * NVDOCKER_RUNTIME_CONFIG / NVDOCKER_DRIVER_ROOT, and runc gets exactly what it would get without
 * us. Python runs -I -S (no PYTHON* variables, no site). What the container controls is the
 * content of the bundle's config.json (env, annotations, hooks): here it is only searched with
 * memmem, never parsed or echoed. The hooks we add to it carry their own env (see
 * nvdocker_setup/driver/model.py HOOK_ENV), since runc starts createContainer hooks with the
 * container's environment.
 *
 * Errors: fail() writes runc's --log first (containerd reads it), then one bounded line to stderr
 * without blocking: the shim reads that pipe only after we exit, so a blocking write of more than
 * a pipe buffer would wedge `docker run`.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "launcher.h"

#define DEFAULT_CONFIG "/etc/nvdocker/runtime.conf"
#define DEFAULT_RUNTIMES "runc crun"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define REAL_RUNTIME_FLAG "--nvdocker-real-runtime="
#define HOOK_FLAG "--nvdocker-hook="

/* Global flags that take a value when written "--flag value" (runc's; crun's last two). */
static const char *const global_value_flags[] = {"root", "log", "log-format", "criu", "rootless",
						 "cgroup-manager", "log-level", NULL};
/* `create` flags that take a value. */
static const char *const create_value_flags[] = {"bundle", "b", "console-socket", "pid-file",
						 "pidfd-socket", "preserve-fds", NULL};
/* A request needs one of these in config.json; "\u" catches a JSON-escaped spelling of any.
 * Exactly nvdocker_setup/runtime/request.py REQUEST_MARKERS, in its order (tests/runtime/
 * test_launcher.py parses this array and fails when the two differ): requests we refuse
 * (NVIDIA_IMEX_CHANNELS...) must reach Python too, or they would be silently ignored, and so
 * must a device list passed only as mounts (/var/run/nvidia-container-devices/<id>). */
static const char *const request_markers[] = {"NVIDIA_VISIBLE_DEVICES", "nvidia-container-runtime-hook",
					      "nvidia-container-toolkit", "cdi.k8s.io",
					      "NVIDIA_IMEX_CHANNELS", "NVIDIA_MIG_CONFIG_DEVICES",
					      "NVIDIA_MIG_MONITOR_DEVICES", "\\u",
					      "nvidia-container-devices", "CUDA_VERSION", NULL};

static const char *log_path;   /* runc's --log: where containerd looks for our error */
static const char *log_format; /* --log-format: json (containerd) or text */

/* One write of `text` to stderr that cannot block (O_NONBLOCK for the call; EAGAIN loses it). */
void write_stderr_nonblocking(const char *text, size_t len)
{
	int flags = fcntl(STDERR_FILENO, F_GETFL);

	if (flags < 0)
		return;
	if (!(flags & O_NONBLOCK))
		fcntl(STDERR_FILENO, F_SETFL, flags | O_NONBLOCK);
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, text, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		text += n;
		len -= (size_t)n;
	}
	if (!(flags & O_NONBLOCK))
		fcntl(STDERR_FILENO, F_SETFL, flags);
}

/* Append `message` to --log in runc's format, then to stderr, then exit 1. The text is bounded
 * (2 KiB): far below a pipe buffer. */
static void fail(const char *message, const char *detail)
{
	char text[2048], stamp[64];
	time_t now = time(NULL);

	snprintf(text, sizeof(text), "nvdocker-runtime: %s%s", message, detail ? detail : "");
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	FILE *log = log_path ? fopen(log_path, "ae") : NULL;
	if (log) {
		int json = !log_format || strcmp(log_format, "text") != 0;
		fputs(json ? "{\"level\":\"error\",\"msg\":\"" : "time=\"", log);
		if (!json)
			fprintf(log, "%s\" level=error msg=\"", stamp);
		for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
			if (*c == '"' || *c == '\\')
				fprintf(log, "\\%c", *c);
			else if (*c < 0x20)
				fprintf(log, json ? "\\u%04x" : " ", *c);
			else
				fputc(*c, log);
		}
		if (json)
			fprintf(log, "\",\"time\":\"%s\"}\n", stamp);
		else
			fputs("\"\n", log);
		fclose(log);
	}
	size_t len = strlen(text);
	text[len < sizeof(text) - 1 ? len : sizeof(text) - 2] = '\n';
	write_stderr_nonblocking(text, len < sizeof(text) - 1 ? len + 1 : sizeof(text) - 1);
	exit(1);
}

/* strdup that fails the call (with runc's log) instead of returning NULL. */
static char *checked_strdup(const char *text)
{
	char *copy = strdup(text);

	if (!copy)
		fail("out of memory", NULL);
	return copy;
}

/* For "--name", "-name", "--name=value": the name, its length and the value after '='. */
static int split_flag(const char *arg, const char **name, size_t *len, const char **value)
{
	if (arg[0] != '-' || arg[1] == '\0' || strcmp(arg, "--") == 0)
		return 0;
	*name = arg + (arg[1] == '-' ? 2 : 1);
	const char *eq = strchr(*name, '=');
	*len = eq ? (size_t)(eq - *name) : strlen(*name);
	*value = eq ? eq + 1 : NULL;
	return 1;
}

static int is_named(const char *name, size_t len, const char *const *list)
{
	for (; *list; list++)
		if (strlen(*list) == len && strncmp(*list, name, len) == 0)
			return 1;
	return 0;
}

/* Index of the first argument after the flags starting at `i`; records --log/--bundle values. */
static int skip_flags(int argc, char **argv, int i, const char *const *value_flags, const char **bundle)
{
	const char *name, *value;
	size_t len;

	while (i < argc) {
		if (strcmp(argv[i], "--") == 0)
			return i + 1;
		if (!split_flag(argv[i], &name, &len, &value))
			break;
		if (!value && is_named(name, len, value_flags)) {
			value = i + 1 < argc ? argv[i + 1] : NULL;
			i++;
		}
		i++;
		if (len == 3 && strncmp(name, "log", 3) == 0)
			log_path = value;
		else if (len == 10 && strncmp(name, "log-format", 10) == 0)
			log_format = value;
		else if (bundle && ((len == 6 && strncmp(name, "bundle", 6) == 0) || (len == 1 && name[0] == 'b')))
			*bundle = value;
	}
	return i;
}

/* Whether the bundle's config.json could request GPUs; an unreadable one goes to Python, which
 * reports the problem properly. */
static int may_request_gpus(const char *bundle)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, maybe = 1;

	snprintf(path, sizeof(path), "%s/config.json", bundle ? bundle : ".");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		if (fd >= 0)
			close(fd);
		return 1;
	}
	char *data = malloc((size_t)st.st_size + 1);
	ssize_t got = 0, n = 0;
	while (data && got < st.st_size && (n = read(fd, data + got, (size_t)(st.st_size - got))) > 0)
		got += n;
	close(fd);
	if (data && n >= 0 && got == st.st_size) {
		maybe = 0;
		for (const char *const *marker = request_markers; *marker && !maybe; marker++)
			maybe = memmem(data, (size_t)got, *marker, strlen(*marker)) != NULL;
	}
	free(data);
	return maybe;
}

/*
 * Whether only root decided what `path` is (as root; any other user runs with their own rights):
 * every directory looked in is root's and not group/other-writable unless sticky, every symlink
 * followed is root's, and the file is root's and not group/other-writable (a character device
 * aside: /dev/null as an empty config). The same rule as resolve_trusted() in
 * nvdocker_setup/driver/discovery.py: a user who could write runtime.conf, or replace the runtime
 * it names, would otherwise have root run their program on every container operation.
 */
static int trusted_path(const char *path)
{
	char pending[2 * PATH_MAX], next[2 * PATH_MAX], resolved[PATH_MAX] = "", candidate[PATH_MAX];
	char part[NAME_MAX + 1], target[PATH_MAX];
	struct stat st;
	int hops = 0;
	char *rest;

	if (geteuid() != 0)
		return 1;
	if (!path || path[0] != '/' || strlen(path) >= sizeof(pending))
		return 0;
	if (lstat("/", &st) != 0 || st.st_uid != 0 || (st.st_mode & 022))
		return 0;
	strcpy(pending, path);
	rest = pending;
	for (;;) {
		while (*rest == '/')
			rest++;
		if (!*rest)
			return 1;
		size_t n = strcspn(rest, "/");
		if (n > NAME_MAX)
			return 0;
		memcpy(part, rest, n);
		part[n] = '\0';
		rest += n;
		if (strcmp(part, ".") == 0)
			continue;
		if (strcmp(part, "..") == 0) {
			char *slash = strrchr(resolved, '/');
			if (slash)
				*slash = '\0';
			continue;
		}
		if (snprintf(candidate, sizeof(candidate), "%s/%s", resolved, part) >= (int)sizeof(candidate))
			return 0;
		if (lstat(candidate, &st) != 0)
			return 0;
		if (S_ISLNK(st.st_mode)) {
			ssize_t len;
			if (st.st_uid != 0 || ++hops > 40)
				return 0;
			len = readlink(candidate, target, sizeof(target) - 1);
			if (len <= 0)
				return 0;
			target[len] = '\0';
			if (snprintf(next, sizeof(next), "%s/%s", target, rest) >= (int)sizeof(next))
				return 0;
			strcpy(pending, next);
			rest = pending;
			if (target[0] == '/')
				resolved[0] = '\0';
			continue;
		}
		const char *after = rest;
		while (*after == '/')
			after++;
		int final = *after == '\0';
		if (st.st_uid != 0)
			return 0;
		if ((st.st_mode & 022) && !(S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX)) && !(final && S_ISCHR(st.st_mode)))
			return 0;
		if (!final && !S_ISDIR(st.st_mode))
			return 0;
		if (strlen(resolved) + 1 + n >= sizeof(resolved))
			return 0;
		strcat(strcat(resolved, "/"), part);
	}
}

/* The `runtimes` value of [runtime] in the config file (malloc'd), or NULL for the default. */
static char *configured_runtimes(void)
{
	const char *path = getenv("NVDOCKER_RUNTIME_CONFIG");
	int explicit = path && *path, in_section = 1, in_value = 0;
	char line[4096], *found = NULL;
	FILE *file = fopen(explicit ? path : DEFAULT_CONFIG, "re");

	if (!file) {
		if (explicit)
			fail("cannot read NVDOCKER_RUNTIME_CONFIG=", path);
		return NULL;
	}
	if (geteuid() == 0) { /* root's alone, or its runtimes do not count (the Python step refuses GPU starts) */
		struct stat st;
		int null_device = fstat(fileno(file), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3);
		if (!null_device && (fstat(fileno(file), &st) != 0 || st.st_uid != 0 || (st.st_mode & 022) ||
				     !trusted_path(explicit ? path : DEFAULT_CONFIG))) {
			fclose(file);
			return NULL;
		}
	}
	while (fgets(line, sizeof(line), file)) {
		char *start = line, *end = line + strlen(line);
		while (end > line && isspace((unsigned char)end[-1]))
			*--end = '\0';
		while (isspace((unsigned char)*start))
			start++;
		if (*start == '\0' || *start == '#' || *start == ';') {
			in_value = 0;
		} else if (in_value && start != line) { /* indented: continues the value */
			size_t size = strlen(found) + strlen(start) + 2;
			char *longer = realloc(found, size);
			if (!longer)
				fail("out of memory", NULL);
			found = longer;
			strcat(strcat(found, " "), start);
		} else if (*start == '[' && end[-1] == ']') { /* "[ Runtime ]" counts too */
			char *name = start + 1, *stop = end - 1;
			while (name < stop && isspace((unsigned char)*name))
				name++;
			while (stop > name && isspace((unsigned char)stop[-1]))
				stop--;
			in_value = 0;
			in_section = stop - name == 7 && strncasecmp(name, "runtime", 7) == 0;
		} else {
			size_t key_end = strcspn(start, "=:");
			in_value = 0;
			if (!in_section || start[key_end] == '\0')
				continue;
			char *key_stop = start + key_end, *value = key_stop + 1;
			while (key_stop > start && isspace((unsigned char)key_stop[-1]))
				key_stop--;
			while (isspace((unsigned char)*value))
				value++;
			if (key_stop - start == 8 && strncasecmp(start, "runtimes", 8) == 0) {
				free(found);
				found = checked_strdup(value);
				in_value = 1;
			}
		}
	}
	fclose(file);
	return found;
}

static int executable(const char *path, const char *self)
{
	struct stat st;
	char real[PATH_MAX];

	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || access(path, X_OK) != 0)
		return 0;
	if (!trusted_path(path)) /* root execs it for every container: nobody else may replace it */
		return 0;
	return !(self && realpath(path, real) && strcmp(real, self) == 0); /* never exec ourselves */
}

/* The first configured runtime that exists (malloc'd path); fails when there is none. */
static char *real_runtime(void)
{
	char self[PATH_MAX], candidate[PATH_MAX];
	const char *self_ok = realpath("/proc/self/exe", self) ? self : NULL;
	char *list = configured_runtimes();
	char *names = checked_strdup(list && *list ? list : DEFAULT_RUNTIMES);
	const char *search = getenv("PATH");

	if (!search || !*search)
		search = DEFAULT_PATH;
	for (char *save = NULL, *name = strtok_r(names, " \t,", &save); name; name = strtok_r(NULL, " \t,", &save)) {
		if (strchr(name, '/')) {
			if (executable(name, self_ok))
				return checked_strdup(name);
			continue;
		}
		for (const char *dir = search; *dir;) {
			size_t len = strcspn(dir, ":");
			snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)len, len ? dir : ".", name);
			if (executable(candidate, self_ok))
				return checked_strdup(candidate);
			dir += len + (dir[len] == ':');
		}
	}
	fail("no OCI runtime found to run the container; tried: ", list && *list ? list : DEFAULT_RUNTIMES);
	return NULL;
}

int main(int argc, char **argv)
{
	const char *bundle = NULL, *base = strrchr(argv[0], '/');

	if (strcmp(base ? base + 1 : argv[0], LDCACHE_HOOK_NAME) == 0)
		return ldcache_hook_main(argc, argv);
	int sub = skip_flags(argc, argv, 1, global_value_flags, NULL);
	char *runtime = real_runtime();

	if (sub < argc && strcmp(argv[sub], "create") == 0) {
		skip_flags(argc, argv, sub + 1, create_value_flags, &bundle);
		if (may_request_gpus(bundle)) {
			char self[PATH_MAX];
			char **args = calloc((size_t)argc + 6, sizeof(char *));
			char *flag = malloc(strlen(REAL_RUNTIME_FLAG) + strlen(runtime) + 1);
			int at = 5;
			if (!args || !flag)
				fail("out of memory", NULL);
			strcat(strcpy(flag, REAL_RUNTIME_FLAG), runtime);
			args[0] = NVDOCKER_PYTHON;
			args[1] = "-I";
			args[2] = "-S";
			args[3] = NVDOCKER_RUNTIME_SCRIPT;
			args[4] = flag;
			/* This binary is also the ld cache hook (LDCACHE_HOOK_NAME): no second interpreter
			 * start per GPU container. Offered only when nobody but root could replace it. */
			if (realpath("/proc/self/exe", self) && trusted_path(self)) {
				char *hook = malloc(strlen(HOOK_FLAG) + strlen(self) + 1);
				if (!hook)
					fail("out of memory", NULL);
				args[at++] = strcat(strcpy(hook, HOOK_FLAG), self);
			}
			memcpy(args + at, argv + 1, (size_t)(argc - 1) * sizeof(char *));
			execv(args[0], args);
			fail("cannot start the Python runtime " NVDOCKER_PYTHON " " NVDOCKER_RUNTIME_SCRIPT, NULL);
		}
	}
	argv[0] = runtime;
	execv(runtime, argv);
	fail("cannot execute ", runtime);
	return 1;
}
