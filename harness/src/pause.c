/* The pod sandbox process for node tests: holds the pod's namespaces until told to stop.
 * Built with `gcc -static -O2` at test time, so the image needs no libc. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

/* As PID 1 of the pod's PID namespace it inherits orphans and must reap them. */
static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(void) {
    struct sigaction stop = {0};
    stop.sa_handler = on_stop;
    sigaction(SIGTERM, &stop, 0);
    sigaction(SIGINT, &stop, 0);

    struct sigaction child = {0};
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &child, 0);

    for (;;) {
        pause();
    }
    return 0;
}
