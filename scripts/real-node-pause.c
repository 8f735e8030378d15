/*
 * The sandbox ("pause") program of scripts/real-node: the first process of
 * every pod, holding the pod's namespaces open. No pause image can be
 * pulled on the machines this runs on, so the script compiles this with
 * `gcc -static` and ships it alone in a FROM-scratch image.
 *
 * It blocks the signals it cares about and takes them synchronously with
 * sigwait(), so there is no handler and no race between a check and a
 * sleep: SIGTERM or SIGINT ends it with status 0 (the runtime stops a
 * sandbox that way), SIGCHLD reaps every exited child (as PID 1 of a
 * shared PID namespace it inherits the pod's orphans).
 */
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>

static void reap_exited_children(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	sigset_t wanted;
	int sig;

	sigemptyset(&wanted);
	sigaddset(&wanted, SIGTERM);
	sigaddset(&wanted, SIGINT);
	sigaddset(&wanted, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &wanted, NULL) != 0) {
		perror("real-node pause: sigprocmask");
		return 1;
	}
	/* Children that exited before the mask was set sent SIGCHLD already. */
	reap_exited_children();
	for (;;) {
		if (sigwait(&wanted, &sig) != 0) {
			fputs("real-node pause: sigwait failed\n", stderr);
			return 1;
		}
		if (sig == SIGCHLD)
			reap_exited_children();
		else
			return 0;
	}
}
