/*
 * The C-variadic kernel exports of the Haiku simulator (sim::haiku::exports).
 *
 * Stable Rust cannot define C-variadic functions, so these few are C: they format with the
 * host's vsnprintf and hand the text to a Rust sink registered once at start-up. The names
 * carry a prefix so they never interpose on the host libc's own dprintf/snprintf; the
 * simulator binds the add-on's imports to them by address.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* kind: 0 = dprintf, 1 = kprintf, 2 = panic (the sink does not return for 2). */
typedef void (*sim_haiku_sink_fn)(int kind, const char *text, size_t length);

static sim_haiku_sink_fn sink;

void sim_haiku_set_sink(sim_haiku_sink_fn fn)
{
	sink = fn;
}

static void emit(int kind, const char *format, va_list args)
{
	char small[512];
	char *text = small;
	char *big = NULL;
	int length;
	va_list again;

	if (format == NULL)
		format = "(dprintf with a NULL format)\n";

	va_copy(again, args);
	length = vsnprintf(small, sizeof(small), format, args);
	if (length < 0) {
		text = "(unformattable message)\n";
		length = (int)strlen(text);
	} else if ((size_t)length >= sizeof(small)) {
		big = malloc((size_t)length + 1);
		if (big != NULL) {
			vsnprintf(big, (size_t)length + 1, format, again);
			text = big;
		} else
			length = sizeof(small) - 1;
	}
	va_end(again);

	if (sink != NULL)
		sink(kind, text, (size_t)length);
	else
		fwrite(text, 1, (size_t)length, stderr);

	free(big);
}

void sim_haiku_dprintf(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	emit(0, format, args);
	va_end(args);
}

void sim_haiku_kprintf(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	emit(1, format, args);
	va_end(args);
}

void sim_haiku_panic(const char *format, ...)
{
	va_list args;
	va_start(args, format);
	emit(2, format, args);
	va_end(args);
	/* The sink never returns for a panic; if none is set, stop here all the same. */
	abort();
}

int sim_haiku_snprintf(char *buffer, size_t size, const char *format, ...)
{
	va_list args;
	int length;

	if (format == NULL)
		return -1;
	va_start(args, format);
	length = vsnprintf(buffer, size, format, args);
	va_end(args);
	return length;
}
