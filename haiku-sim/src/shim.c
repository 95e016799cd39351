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

/*
 * sim_haiku_fault_copy(dst, src, len): copies len bytes forwards, 8 at a time and then the
 * rest, and returns 0. A fault on either side returns 1 instead: the simulator's fault
 * handler (haiku-sim's user.rs), seeing the faulting instruction inside this routine,
 * resumes the thread at sim_haiku_fault_copy_failed. Haiku's user_memcpy works the same way
 * (arch_cpu_user_memcpy with the thread's fault handler, src/system/kernel/arch/x86/64/arch.S).
 * Written in assembly so that the faulting instructions are known and nothing is on the
 * stack when the copy is abandoned.
 */
#if defined(__x86_64__)
__asm__(
	".pushsection .text.sim_haiku_fault_copy,\"ax\",@progbits\n"
	".p2align 4\n"
	".globl sim_haiku_fault_copy\n"
	".hidden sim_haiku_fault_copy\n"
	".type sim_haiku_fault_copy,@function\n"
	"sim_haiku_fault_copy:\n"
	"	movq %rdx, %rcx\n"
	"	shrq $3, %rcx\n"
	"	rep movsq\n"
	"	movq %rdx, %rcx\n"
	"	andq $7, %rcx\n"
	"	rep movsb\n"
	"	xorl %eax, %eax\n"
	"	ret\n"
	".globl sim_haiku_fault_copy_failed\n"
	".hidden sim_haiku_fault_copy_failed\n"
	"sim_haiku_fault_copy_failed:\n"
	"	movl $1, %eax\n"
	"	ret\n"
	".size sim_haiku_fault_copy, . - sim_haiku_fault_copy\n"
	".popsection\n");
#endif
