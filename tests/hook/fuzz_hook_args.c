/*
 * Differential fuzz harness for the C hook's parsers (launcher/ldcache-hook.c), driven by
 * tests/hook/test_native_hook.py: each stdin line is "KIND HEX" (the input, hex-encoded so that
 * any byte but NUL can be sent); each output line is the C verdict, which the test compares with
 * the Python hook's (nvdocker_setup/driver/links.py, compat.py, hook/main.py). Built with
 * -fsanitize=address,undefined: a memory or UB finding ends the run with status 99.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher.h"

struct link {
	const char *target, *name;
	char *directory;
};

struct version {
	int parts;
	long value[4];
};

struct dri_link {
	char *node;
	const char *name;
};

int parse_link(const char *value, struct link *link);
int parse_dri_link(const char *value, struct dri_link *link);
int parse_driver_branches(const unsigned char *text, size_t len, long *branches);
int parse_version(const char *text, struct version *version);

void write_stderr_nonblocking(const char *text, size_t len)
{
	if (write(STDERR_FILENO, text, len) < 0)
		return;
}

static size_t unhex(const char *hex, char *out)
{
	size_t n = 0;

	for (; hex[0] && hex[1]; hex += 2) {
		unsigned value;
		if (sscanf(hex, "%2x", &value) != 1)
			break;
		out[n++] = (char)value;
	}
	out[n] = '\0';
	return n;
}

static void print_hex(const char *text)
{
	for (const unsigned char *c = (const unsigned char *)text; *c; c++)
		printf("%02x", *c);
}

int main(void)
{
	char *line = NULL;
	size_t size = 0;

	while (getline(&line, &size, stdin) > 0) {
		char kind[16], *space = strchr(line, ' ');
		if (!space || space - line >= (long)sizeof(kind))
			return 2;
		memcpy(kind, line, (size_t)(space - line));
		kind[space - line] = '\0';
		line[strcspn(line, "\n")] = '\0';
		char *value = malloc(strlen(space + 1) / 2 + 1);
		size_t len = unhex(space + 1, value);
		if (strcmp(kind, "link") == 0) {
			struct link link;
			if (parse_link(value, &link)) {
				print_hex(link.target);
				putchar(' ');
				print_hex(link.directory);
				putchar(' ');
				print_hex(link.name);
				free(link.directory);
				free((char *)link.target);
			} else {
				putchar('-');
			}
		} else if (strcmp(kind, "dri") == 0) {
			struct dri_link link;
			if (parse_dri_link(value, &link)) {
				print_hex(link.node);
				putchar(' ');
				print_hex(link.name);
				free(link.node);
			} else {
				putchar('-');
			}
		} else if (strcmp(kind, "note") == 0) {
			long branches[64];
			int count = parse_driver_branches((const unsigned char *)value, len, branches);
			if (count < 0)
				putchar('-');
			for (int i = 0; i < count; i++)
				printf("%s%ld", i ? "," : "", branches[i]);
		} else if (strcmp(kind, "version") == 0) {
			struct version version;
			if (parse_version(value, &version))
				for (int i = 0; i < version.parts; i++)
					printf("%s%ld", i ? "." : "", version.value[i]);
			else
				putchar('-');
		} else if (strcmp(kind, "dir") == 0) {
			printf("%d", is_plain_directory(value, strlen(value)));
		} else if (strcmp(kind, "utf8") == 0) {
			printf("%d", valid_utf8(value));
		} else if (strcmp(kind, "elf") == 0) {
			printf("%d", is_elf_shared_object((const unsigned char *)value, len));
		} else {
			return 2;
		}
		putchar('\n');
		free(value);
	}
	free(line);
	return 0;
}
